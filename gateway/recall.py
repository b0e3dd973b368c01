"""Which stored memory a turn recalls: the embedder's cosine, plus the share of the memory's words the turn uses.

The original recalls by cosine alone (UPSTREAM.md §3.3). A small embedder scores a turn that names the memory's
topic in its own words ("내가 좋아하는 가수 노래 들으면서 출근해" against `[좋아하는 가수: 아이유]`) just under the
threshold; the words the two share are the plainest evidence there is. So each memory's score is its cosine plus
`lexical_weight` times the share of its words (key and value, two syllables or more) found in the turn, as hybrid
retrieval adds a lexical score to a dense one. A weight of 0 is the original's rule. The weight and the threshold
are calibrated together on a calibration set of their own (scripts/recall_threshold.py, docs/models.md).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

_SEPARATORS = re.compile(r"[\s,./·:()\[\]]+")


@lru_cache(maxsize=65536)
def memory_words(memory: str) -> tuple[str, ...]:
    """The words of a `[key: value]` memory that can be looked for in a turn: two syllables or more. Kept per
    text (a memory's text never changes), so a turn does not split a user's thousand memories again."""
    return tuple(w for w in _SEPARATORS.split(memory) if len(w) >= 2)


def _found(word: str, text: str) -> bool:
    """The word in the text, or its stem: Korean attaches particles and endings (여동생이랑, 귀엽다 → 귀여워 is missed)."""
    return word in text or (len(word) >= 3 and word[:-1] in text)


def word_overlap(text: str, memories: list[str]) -> np.ndarray:
    """For each memory, the share of its words the text contains (0 for a memory without words)."""
    shares = []
    for memory in memories:
        words = memory_words(memory)
        shares.append(sum(_found(w, text) for w in words) / len(words) if words else 0.0)
    return np.array(shares, dtype=np.float32)


def best_memory(query: np.ndarray, texts: list[str], vectors: np.ndarray, threshold: float,
                turn: str = "", lexical_weight: float = 0.0) -> str:
    """The text whose score (the cosine of its vector, a row of `vectors` L2-normalised like `query`, plus
    `lexical_weight` times its word overlap with `turn`) is highest, if that score reaches `threshold`; else ''.

    One matrix product scores every memory (0.04 ms for 1,000 against 1 ms for a loop of dot products).
    Among equal top scores the greatest text wins, as max() over (score, text) pairs decides.
    """
    scores = vectors @ query
    if lexical_weight:
        scores = scores + lexical_weight * word_overlap(turn, texts)
    top = scores.max()
    if not float(top) >= threshold:
        return ""
    return max(texts[n] for n in np.flatnonzero(scores == top))
