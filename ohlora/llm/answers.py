"""Answers from a fixed set: the token paths a row may take, and the stretches no choice can change.

The expression task's answer is one of 36 texts, "(눈 X, 입 Y, 고개 돌림 Z)". Sampled freely, a small model spends
a forward pass on each of its 13-16 tokens (Qwen2.5) and the end, though only three choices are open, and now and
then breaks the format (a retry, another second). Given the set, the engine samples only where the texts part ways,
among the tokens that keep to one of them, and writes every stretch they share in the pass that chose the token
before it (jump-forward decoding, as SGLang does for constrained formats): three passes instead of fifteen or so,
and an answer the parser always takes. The model still chooses: each choice is sampled from its own probabilities, renormalized over the
allowed tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase


@dataclass
class AnswerNode:
    """A point in the answers' token paths: the tokens that may follow, and whether an answer may end here."""

    children: dict[int, "AnswerNode"] = field(default_factory=dict)
    end: bool = False

    def forced(self) -> tuple[list[int], "AnswerNode"]:
        """The tokens that follow with no choice left (one child, no answer ending here), and where they lead."""
        node, run = self, []
        while not node.end and len(node.children) == 1:
            token, node = next(iter(node.children.items()))
            run.append(token)
        return run, node

    @property
    def complete(self) -> bool:
        """An answer ends here and none goes on: the row is finished without an end-of-text token."""
        return self.end and not self.children


class AnswerTrie:
    """The token paths of a set of answer texts, each tokenized as the model writes it after its prompt.

    Each text is encoded on its own, as `ohlora train` encodes an answer after its prompt, so the paths are the
    ones a fine-tuned adapter learnt. Where one answer is a prefix of another, the row may end there by sampling
    an end-of-text token.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, answers: Sequence[str], prefixes: bool = False) -> None:
        if not answers:
            raise ValueError("an answer set needs at least one answer")
        # True: the texts are openings; a row that has written one whole goes on sampling freely (the memory's
        # "[key:", then any value).
        self.prefixes = prefixes
        self.root = AnswerNode()
        for answer in answers:
            ids = tokenizer.encode(answer, add_special_tokens=False)
            if not ids:
                raise ValueError(f"the answer {answer!r} has no tokens")
            node = self.root
            for token in ids:
                node = node.children.setdefault(token, AnswerNode())
            node.end = True
