"""Which stored memory a turn recalls: the embedder's cosine, plus the share of the memory's words the turn uses.

The original recalls by cosine alone (UPSTREAM.md §3.3). A small embedder scores a turn that names the memory's
topic in its own words ("내가 좋아하는 가수 노래 들으면서 출근해" against `[좋아하는 가수: 아이유]`) just under the
threshold; the words the two share are the plainest evidence there is. So each memory's score is its cosine plus
`lexical_weight` times the share of its words (key and value, two syllables or more) found in the turn, as hybrid
retrieval adds a lexical score to a dense one. A weight of 0 is the original's rule. The weight and the threshold
are calibrated together on a calibration set of their own (scripts/recall_threshold.py, docs/models.md).

A key's topic is often named in other words than the key's own: "우리 동네" for `사는 곳`, "남친" for `연인`,
"강아지" for `반려동물`. KEY_TOPICS lists such words for the keys of the memory vocabulary; any of them in the turn
counts as the key's (last) word found.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

_SEPARATORS = re.compile(r"[\s,./·:()\[\]]+")


# Words users name a key's topic with, other than the key's own (keys from ohlora.llm.persona.MEMORY_KEYS; a test
# keeps them so). Written for everyday Korean chat; a word that many unrelated turns contain (먹다, 약) stays out.
KEY_TOPICS: dict[str, tuple[str, ...]] = {
    "좋아하는 음식": ("메뉴", "먹을", "간식", "디저트"),
    "싫어하는 음식": ("메뉴", "반찬", "못 먹"),
    "먹고 싶은 음식": ("메뉴", "먹을"),
    "좋아하는 가수": ("노래", "음악", "콘서트", "앨범"),
    "좋아하는 노래": ("음악", "플레이리스트"),
    "좋아하는 색": ("색깔", "무슨 색"),
    "반려동물": ("강아지", "고양이", "댕댕이", "냥이", "산책"),
    "키우는 식물": ("화분", "식물", "물 주"),
    "가족": ("엄마", "아빠", "동생", "언니", "오빠", "누나", "부모님", "할머니", "할아버지"),
    "친구": ("베프", "절친", "단짝"),
    "연인": ("남자친구", "여자친구", "남친", "여친", "애인"),
    "사는 곳": ("동네", "사는 데", "집 근처"),
    "직업": ("회사", "직장", "출근", "퇴근", "일하", "근무"),
    "학교": ("수업", "강의", "캠퍼스", "교수님"),
    "전공": ("학과", "과제"),
    "생일": ("미역국",),
    "나이": ("몇 살",),
    "건강": ("병원", "아파", "아프"),
    "롤 티어": ("랭크", "랭겜"),
    "MBTI": ("성격",),
}


def _words(text: str) -> list[str]:
    return [w for w in _SEPARATORS.split(text) if len(w) >= 2]


@lru_cache(maxsize=65536)
def memory_words(memory: str) -> tuple[str, ...]:
    """The words of a `[key: value]` memory that can be looked for in a turn: two syllables or more. Kept per
    text (a memory's text never changes), so a turn does not split a user's thousand memories again."""
    return tuple(_words(memory))


@lru_cache(maxsize=65536)
def memory_terms(memory: str) -> tuple[tuple[tuple[str, ...], ...], int]:
    """The memory's words, each with the words that count as it found (the key's last word with its topic's), and
    which of them is the key's topic word (-1 for none)."""
    key = memory[1:].split(":", 1)[0].strip() if memory.startswith("[") and ":" in memory else ""
    last = len(_words(key)) - 1  # the key's words come first among the memory's; -1: a key of no word
    topics = KEY_TOPICS.get(key, ())
    terms = tuple((w, *topics) if n == last else (w,) for n, w in enumerate(memory_words(memory)))
    return terms, last


def _found(word: str, text: str) -> bool:
    """The word in the text, or its stem: Korean attaches particles and endings (여동생이랑, 귀엽다 → 귀여워 is missed)."""
    return word in text or (len(word) >= 3 and word[:-1] in text)


# The share a memory gets for its topic named in the turn, whatever the rest: a turn that names the key ("취미 생활
# 좀 하고 싶다" and `[취미: 뜨개질]`) is about that memory even though it cannot name the value it asks her to recall.
TOPIC_SHARE = 0.5


def word_overlap(text: str, memories: list[str]) -> np.ndarray:
    """For each memory, the share of its words (or their topic words) the text contains; where the text names the
    memory's topic (its key's last word or a word of KEY_TOPICS), at least TOPIC_SHARE plus the rest in proportion
    to its value words found. 0 for a memory without words."""
    shares = []
    for memory in memories:
        terms, topic = memory_terms(memory)
        found = [any(_found(w, text) for w in term) for term in terms]
        share = sum(found) / len(terms) if terms else 0.0
        if topic >= 0 and found[topic]:
            values = found[topic + 1:]
            share = max(share, TOPIC_SHARE + (1 - TOPIC_SHARE) * (sum(values) / len(values) if values else 1.0))
        shares.append(share)
    return np.array(shares, dtype=np.float32)


# A turn about her: a second person ("너 생일은 언제야?", "넌 뭐 좋아해?", "로라는 …") and no first person (나, 내, 저,
# 제, 우리 …), word by word after punctuation is dropped. Such a turn asks for her own facts; a memory of the user's
# in front of it made the small tuned model answer with the user's ("[생일: 3월 14일] 로라야 너 생일은 언제야?" →
# "3월 14일이야!"), so it recalls only what the user feels about her (ABOUT_HER_KEY). Korean drops pronouns, and a turn
# without one recalls as any other.
SECOND_PERSON = re.compile(r"^(?:너(?:는|도|가|의|한테|랑|를|만)?|넌|널|네가|니가|오?로라(?:는|도|가|의|한테|랑|를|만))$")
FIRST_PERSON = re.compile(r"^(?:나(?:는|도|가|의|한테|랑|를|만)?|난|날|내|내가|제|제가|저(?:는|도|의)?|전|우리|울)$")
ABOUT_HER_KEY = "오로라에 대한 감정"
_PUNCTUATION = re.compile(r"[^\w]")


def asks_about_her(turn: str) -> bool:
    words = [_PUNCTUATION.sub("", w) for w in turn.split()]
    return any(SECOND_PERSON.match(w) for w in words) and not any(FIRST_PERSON.match(w) for w in words)


def recall_scores(cosines: np.ndarray, turn: str, texts: list[str], lexical_weight: float) -> np.ndarray:
    """Each memory's score for the turn: its cosine plus `lexical_weight` times its word overlap; -inf for a memory
    a turn about her must not recall."""
    scores = cosines + lexical_weight * word_overlap(turn, texts) if lexical_weight else cosines.copy()
    if asks_about_her(turn):
        scores[[not t.startswith(f"[{ABOUT_HER_KEY}:") for t in texts]] = -np.inf
    return scores


def best_memory(query: np.ndarray, texts: list[str], vectors: np.ndarray, threshold: float,
                turn: str = "", lexical_weight: float = 0.0) -> str:
    """The text whose score (recall_scores: the cosine of its vector, a row of `vectors` L2-normalised like `query`,
    plus `lexical_weight` times its word overlap with `turn`) is highest, if that score reaches `threshold`; else ''.

    One matrix product scores every memory (0.04 ms for 1,000 against 1 ms for a loop of dot products).
    Among equal top scores the greatest text wins, as max() over (score, text) pairs decides.
    """
    scores = recall_scores(vectors @ query, turn, texts, lexical_weight)
    top = scores.max()
    if not float(top) >= threshold:
        return ""
    return max(texts[n] for n in np.flatnonzero(scores == top))
