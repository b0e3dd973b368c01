"""The output vocabulary: which tokens a Korean companion may say, and an output layer that computes only those.

A multilingual base spends most of its output layer on tokens Oh-LoRA never says: Qwen2.5's 151,936 rows
are 62 % English and code sub-words and 18 % Chinese and Japanese. Two things follow on the `mini` preset.
Its small model sometimes slips into Chinese (`[내일 일정: 下午 4시 미용실]`). And the output layer (896 × 151,936,
a quarter of the weights read per decoded token) costs as much for those rows as for the Korean ones.

`llm.output_vocabulary = "korean"` keeps the tokens a Korean chat needs (Hangul syllables and jamo, short
ASCII pieces: digits, punctuation, Latin letters in runs of at most four, symbols and emoji, and the byte
pieces that start or end a Hangul syllable, a symbol or an emoji) and the special tokens, and replaces the
output layer by one over those rows alone. The other tokens' logits are -inf, so nothing downstream
(sampling, stopping, streaming) changes shape. The input side is untouched: the user may write anything,
Oh-LoRA answers in Korean.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Literal

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

OutputVocabulary = Literal["full", "korean"]  # as LLMSettings.output_vocabulary (config stays free of torch)

# An ASCII token is kept when its text without surrounding spaces is at most this long: digits, punctuation,
# "ㅋ"-style tails and short Latin pieces stay, so English words can still be spelt out (BTS, OK, iPhone),
# while the long English and code sub-words (two thirds of Qwen2.5's vocabulary) go.
MAX_ASCII_PIECE = 4
# First bytes of an unfinished UTF-8 character a byte token may end with: symbols (E2: ✨ ☕ ❄ …), CJK
# punctuation and jamo (E3), Hangul syllables (EA–ED: Qwen2.5 writes most " 가"-style word starts as a space and
# the syllable's first byte), variation selectors and full-width forms (EF), emoji (F0). Not Chinese (E4–E9).
OPEN_LEADS = frozenset({0xE2, 0xE3, 0xEA, 0xEB, 0xEC, 0xED, 0xEF, 0xF0})


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: token characters to the bytes they stand for."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


@lru_cache(maxsize=4)
def token_bytes(tokenizer: PreTrainedTokenizerBase) -> tuple[bytes | None, ...]:
    """Each token's bytes (None for a token that is not byte-level BPE, e.g. a special token); read once per
    tokenizer, for the restricted output layer and the syllable guard alike."""
    decoder = _byte_decoder()
    out: list[bytes | None] = []
    for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
        try:
            out.append(bytes(decoder[ch] for ch in token) if token is not None else None)
        except KeyError:
            out.append(None)
    return tuple(out)


def korean_char(ch: str) -> bool:
    """A character Oh-LoRA may write: Hangul, ASCII, Latin-1 signs, symbols and emoji (no other script)."""
    code = ord(ch)
    return (
        code < 0x80
        or 0xA0 <= code <= 0xBF or code in (0xD7, 0xF7)  # · ° × ÷ and the like
        or 0xAC00 <= code <= 0xD7A3  # Hangul syllables
        or 0x3131 <= code <= 0x318E  # Hangul compatibility jamo: ㅋㅋ ㅠㅠ
        or 0x2000 <= code <= 0x2BFF  # punctuation, arrows, symbols, dingbats: … ♡ ✨ ☕
        or 0x3000 <= code <= 0x303F  # CJK punctuation: 「 」 〜
        or 0xFE00 <= code <= 0xFE0F  # variation selectors (emoji presentation)
        or 0xFF01 <= code <= 0xFF5E  # full-width ASCII: ！ ？ ～
        or code >= 0x1F000  # emoji
    )


def korean_piece(raw: bytes) -> bool:
    """True when a token's bytes belong in a Korean reply (see the module docstring)."""
    start = 0
    while start < len(raw) and 0x80 <= raw[start] <= 0xBF:  # the end of a character an earlier token began
        start += 1
    body = raw[start:]
    for cut in range(len(body), max(-1, len(body) - 4), -1):  # the longest prefix that decodes
        try:
            text = body[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        tail = body[cut:]
        break
    else:
        return False
    if tail and tail[0] not in OPEN_LEADS:
        return False
    if not all(korean_char(ch) for ch in text):
        return False
    if text.isascii() and text:
        return len(text.strip()) <= MAX_ASCII_PIECE and "\t" not in text and "  " not in text
    return True


def korean_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids `llm.output_vocabulary = "korean"` keeps: Korean pieces and every special token.

    Only a byte-level BPE vocabulary (GPT-2's alphabet: Qwen, Llama 3, GPT-NeoX and so Polyglot-Ko) can be read
    this way; any other (SentencePiece's "▁" pieces, WordPiece) is refused rather than cut to its special tokens.
    """
    special = set(tokenizer.all_special_ids)
    pieces = token_bytes(tokenizer)
    unreadable = sum(raw is None for i, raw in enumerate(pieces) if i not in special)
    if unreadable > len(pieces) // 10:
        raise ValueError(f"llm.output_vocabulary = 'korean' needs a byte-level BPE tokenizer; {unreadable} of "
                         f"{len(pieces)} tokens of {type(tokenizer).__name__} are not byte-level pieces")
    return [i for i, raw in enumerate(pieces) if i in special or (raw is not None and korean_piece(raw))]


class RestrictedHead(torch.nn.Module):
    """An output layer over the kept rows: their logits where they belong, -inf for every other token.

    The matmul covers the kept rows only; scattering them into a full-width row costs a copy of the logits,
    a fraction of a millisecond, and keeps generate(), the samplers and the token ids as they were.
    """

    def __init__(self, head: torch.nn.Linear, keep: list[int]) -> None:
        super().__init__()
        self.vocab_size = head.out_features
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.long, device=head.weight.device), persistent=False)
        bias = head.bias.detach()[self.keep] if head.bias is not None else None
        self.proj = torch.nn.Linear(head.in_features, len(keep), bias=bias is not None,
                                    device=head.weight.device, dtype=head.weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(head.weight.detach()[self.keep])
            if bias is not None:
                self.proj.bias.copy_(bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        kept = self.proj(hidden)
        full = kept.new_full((*kept.shape[:-1], self.vocab_size), float("-inf"))
        return full.index_copy_(-1, self.keep, kept)

    def extra_repr(self) -> str:
        return f"kept={len(self.keep)} of {self.vocab_size}"


def restrict_output(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, vocabulary: OutputVocabulary) -> int:
    """Replaces the model's output layer by one over `vocabulary`; returns how many tokens it keeps."""
    head = model.get_output_embeddings()
    if vocabulary == "full":
        return head.out_features
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"llm.output_vocabulary = {vocabulary!r} needs a plain linear output layer, not {type(head).__name__}")
    keep = [i for i in korean_token_ids(tokenizer) if i < head.out_features]
    # Not set_output_embeddings: a tied model would re-tie its embedding to the new layer's smaller weight.
    owner, name = _owner_of(model, head)
    setattr(owner, name, RestrictedHead(head, keep))
    log.info("output layer restricted to %d of %d tokens (%s)", len(keep), head.out_features, vocabulary)
    return len(keep)


def _owner_of(model: torch.nn.Module, target: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child is target:
                return module, child_name
    raise ValueError("the output layer is not a submodule of the model")


HANGUL_LEADS = frozenset({0xEA, 0xEB, 0xEC, 0xED})


def _open_tail(raw: bytes) -> bytes:
    """The unfinished UTF-8 character at the end of `raw` (b"" when it ends on a whole character)."""
    for back in range(1, min(3, len(raw)) + 1):
        byte = raw[-back]
        if byte < 0x80:
            return b""
        if byte >= 0xC0:  # a lead byte: how long its character is
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return raw[-back:] if back < size else b""
    return b""


class HangulSyllableGuard(LogitsProcessor):
    """Lets a Hangul syllable built from byte pieces be only one that the vocabulary knows as a token of its own.

    Qwen2.5 writes many word starts as a space and the syllable's first byte, then a piece with the rest: the
    same pieces can build any of the 11,172 syllables, and a small model sometimes builds ones no one writes
    (`[오늘 일정: 젌심]`, "죹", "쫋"). While a row has an unfinished syllable, only pieces that finish it into one
    of the syllables the tokenizer has as a whole token (2,512 on Qwen2.5, every syllable of the persona dataset
    among them) stay possible.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pieces = [raw or b"" for raw in token_bytes(tokenizer)]
        texts = (raw.decode("utf-8", "ignore").strip() for raw in self.pieces)
        self.common = {text for text in texts if len(text) == 1 and "가" <= text <= "힣"}
        # Tokens that begin with continuation bytes: (token id, those bytes, whether that is all the token is).
        self.openers: list[tuple[int, bytes, bool]] = []
        for token, raw in enumerate(self.pieces):
            k = 0
            while k < len(raw) and 0x80 <= raw[k] <= 0xBF:
                k += 1
            if k:
                self.openers.append((token, raw[:k], k == len(raw)))
        self._allowed: dict[bytes, torch.Tensor] = {}

    def allowed(self, tail: bytes) -> torch.Tensor:
        """Ids of the pieces that may follow an unfinished syllable `tail` (its first one or two bytes)."""
        if tail not in self._allowed:
            need = 3 - len(tail)
            starts = {s.encode()[:len(tail) + 1] for s in self.common if s.encode().startswith(tail)}
            ok = [token for token, cont, whole in self.openers
                  if (len(cont) == need and (tail + cont).decode("utf-8", "ignore") in self.common)
                  or (len(cont) < need and whole and tail + cont in starts)]
            self._allowed[tail] = torch.tensor(ok, dtype=torch.long)
        return self._allowed[tail]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(input_ids.shape[0]):
            last = b"".join(self.pieces[t] if t < len(self.pieces) else b"" for t in input_ids[row, -3:].tolist())
            tail = _open_tail(last)
            if tail and tail[0] in HANGUL_LEADS:
                allowed = self.allowed(tail).to(scores.device)
                if not len(allowed):  # a piece ended on bytes no known syllable starts with: nothing to choose from
                    continue
                kept = scores[row, allowed]
                scores[row] = float("-inf")
                scores[row, allowed] = kept
        return scores
