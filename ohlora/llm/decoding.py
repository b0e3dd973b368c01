"""The decoding loop: a batch of rows, one forward pass per step, each row growing by its own tokens.

Why not transformers' generate(): a row whose answer comes from a fixed set (the expression's
"(눈 X, 입 Y, 고개 돌림 Z)", ohlora.llm.answers) has stretches no choice can change, and this loop writes such a
stretch in the same forward pass as the token before it, where generate() spends a pass on every token. Rows
of one batch then grow by different numbers of tokens in a step: a row's shorter step is padded on its left and
the attention mask hides the padding, as it hides a prompt's left padding; each row's positions count its own
tokens only. Everything else is what generate() did for the engine: a key/value cache, last-position logits,
float32 scores through the guards and the row sampler, greedy on what they leave.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, LogitsProcessor

from ohlora.llm.answers import AnswerNode, AnswerTrie


@dataclass
class DecodeRow:
    """One row of a batch: its prompt, its budget, its answer set if it has one, and what it wrote so far."""

    prompt: list[int]
    max_new: int
    answers: AnswerTrie | None = None
    generated: list[int] = field(default_factory=list)
    node: AnswerNode | None = None  # where the row is among its answers' token paths
    feed: list[int] = field(default_factory=list)  # the tokens the next forward pass reads for this row

    @property
    def complete(self) -> bool:
        return self.node is not None and self.node.complete

    def write(self, tokens: list[int]) -> None:
        """Appends tokens, then the stretch of the answer set that follows them with no choice left."""
        if self.node is not None:
            for token in tokens:
                self.node = self.node.children.get(token, self.node)  # an end-of-text token leaves the node
            run, self.node = self.node.forced()
            tokens = tokens + run[: max(0, self.max_new - len(self.generated) - len(tokens))]
        self.generated += tokens
        self.feed = tokens

    def allowed(self, end_ids: set[int]) -> list[int]:
        assert self.node is not None
        return [*self.node.children, *(end_ids if self.node.end else ())]


# Decides after each step which rows are done (end of text, budget, stop strings, cancelled, complete answer)
# and streams their text: the engine's _BatchMonitor.
Monitor = Callable[[list[DecodeRow]], list[bool]]


def _cache_argument(model: torch.nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` within 5.x; the base's forward says which it takes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def decode(
    model: torch.nn.Module,
    rows: list[DecodeRow],
    *,
    pad_id: int,
    end_ids: set[int],
    guards: list[LogitsProcessor],
    sampler: LogitsProcessor,
    monitor: Monitor,
    model_kwargs: dict[str, object] | None = None,
) -> int:
    """Runs the batch until the monitor says every row is done; returns the number of forward passes."""
    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    cache_argument = _cache_argument(model)
    for row in rows:
        if row.answers is not None:
            row.node = row.answers.root
            row.write([])  # the answers' common opening rides on the prompt's forward pass
        row.feed = row.prompt + row.feed
    mask = torch.zeros((len(rows), 0), dtype=torch.long, device=device)
    passes = 0
    done = monitor(rows)
    while not all(done):
        width = max(len(row.feed) for row in rows)
        step = torch.tensor([[pad_id] * (width - len(r.feed)) + r.feed for r in rows], device=device)
        fresh = torch.tensor([[0] * (width - len(r.feed)) + [1] * len(r.feed) for r in rows], device=device)
        mask = torch.cat([mask, fresh], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, -width:]
        out = model(input_ids=step, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                    **{cache_argument: cache}, **(model_kwargs or {}))
        passes += 1
        scores = out.logits[:, -1, :].to(dtype=torch.float32)
        raw = scores.clone() if any(r.node is not None for r in rows) else scores
        length = max(len(r.prompt) + len(r.generated) for r in rows)
        sequences = torch.tensor([[pad_id] * (length - len(r.prompt) - len(r.generated)) + r.prompt + r.generated
                                  for r in rows], device=device)
        for guard in guards:  # a fixed answer set needs no guard: its paths are whole texts already
            scores = guard(sequences, scores)
        for index, row in enumerate(rows):
            if row.node is not None and not done[index]:
                allowed = torch.tensor(row.allowed(end_ids), device=device)
                kept = raw[index, allowed]
                scores[index] = float("-inf")
                # A model whose output vocabulary lacks every allowed token still answers from the set.
                scores[index, allowed] = torch.zeros_like(kept) if torch.isinf(kept).all() else kept
        chosen = sampler(sequences, scores).argmax(-1).tolist()
        for index, row in enumerate(rows):
            if done[index]:
                row.feed = []
            else:
                row.write([chosen[index]])
        done = monitor(rows)
    return passes
