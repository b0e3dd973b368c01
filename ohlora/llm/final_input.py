"""The "final input" of a turn: the user's text with a recalled memory or the last answer's summary in front.

The gateway builds it exactly like the original (UPSTREAM.md §3), because the original's adapters were
fine-tuned on that form. Chat-dialect prompts split it again: a small instruct model given the combined
string tends to repeat the summary and the markers back, so its prompt carries the memory or the
summary as context in the system message and only the user's own words as the user message.
"""

from __future__ import annotations

from dataclasses import dataclass

SUMMARY_MARK, QUESTION_MARK = "(오로라 답변 요약)", "(사용자 질문)"


def build_final_input(memory: str, summary: str, text: str) -> str:
    """Exactly the original: a recalled memory wins over the summary; otherwise the plain text."""
    if memory:
        return f"{memory} {text}"
    if summary:
        return f"{SUMMARY_MARK} {summary} {QUESTION_MARK} {text}"
    return text


# Words that place a fact in time ("다음 달 다낭 여행"): they frame what is remembered and are no part of it, so a
# reply that says "다음 달" has not said what it remembers.
TIME_WORDS = frozenset({"오늘", "내일", "어제", "모레", "그제", "이번", "다음", "지난", "요즘", "최근", "주말", "평일",
                        "매일", "아침", "점심", "저녁", "오전", "오후", "새벽", "이따", "나중"})


@dataclass(frozen=True)
class FinalInput:
    memory: str  # "[key: value]" or ""
    summary: str
    text: str  # what the user said

    @property
    def memory_news(self) -> tuple[str, ...]:
        """What the recalled memory adds to the turn: its value, and its value's words of two syllables or more
        but for TIME_WORDS, that the user's text does not already say ("[반려동물: 고양이 보리] 우리 고양이가 밥을
        안 먹어": 고양이 보리, 보리). Echoing the turn's own word is not remembering."""
        if not self.memory:
            return ()
        value = self.memory[1:-1].split(": ", 1)[1].strip()
        words = [value, *(w for w in value.split() if len(w) >= 2 and w not in TIME_WORDS)]
        return tuple(w for w in dict.fromkeys(words) if w not in self.text)

    def context(self) -> str:
        """The memory or summary as a sentence for a chat prompt's system message ('' when there is none)."""
        if self.memory:
            return f"네가 사용자에 대해 기억하는 사실: {self.memory}"
        if self.summary:
            return f"네 직전 답변의 요약: {self.summary}"
        return ""


def split_final_input(final_input: str) -> FinalInput:
    """The inverse of build_final_input, for inputs it built (anything else is plain text)."""
    if final_input.startswith(SUMMARY_MARK) and QUESTION_MARK in final_input:
        summary, text = final_input[len(SUMMARY_MARK):].split(QUESTION_MARK, 1)
        return FinalInput("", summary.strip(), text.strip())
    if final_input.startswith("[") and "] " in final_input:
        memory, text = final_input.split("] ", 1)
        if memory.count("[") == 1 and ": " in memory:
            return FinalInput(memory + "]", "", text.strip())
    return FinalInput("", "", final_input)
