"""The summary task: the original's rules (UPSTREAM.md §2.4)."""

from __future__ import annotations

from ohlora.llm.persona import CONTEXT_NOTE
from ohlora.llm.task import (
    ANSWER_END,
    ANSWER_START,
    ORIGINAL_STOP,
    Attempt,
    ChatPrompt,
    Dialect,
    GenerationSettings,
    Reject,
    TaskSpec,
)
from services.llm_message.task import strip_invisible

MAX_ATTEMPTS = 3
REPLY_MARKER = "(오로라 답변)"


def check_summary(text: str) -> str:
    """Returns the summary (end mark removed; strip happens before, as in the original) or raises Reject."""
    text = strip_invisible(text).strip()
    without_mark = text.replace(ANSWER_END, "")
    if "답변 종료" in without_mark or "답변종료" in without_mark:
        raise Reject("stray end mark")
    if len(without_mark) < 2:
        raise Reject("too short")
    if "�" in text or "http" in text:
        raise Reject("broken character or link")
    return without_mark


def parse_summary(attempt: Attempt) -> str:
    return check_summary(attempt.text)


def build_prompt(final_input: str, reply: str) -> str:
    # No space after the marker: the cleaned reply normally starts with one.
    return f"{final_input} {REPLY_MARKER}{reply} {ANSWER_START}"


def build_chat(final_input: str, reply: str) -> ChatPrompt:
    system = (
        "너는 대화 요약 도우미야. "
        f"{CONTEXT_NOTE} "
        "사용자의 질문과 오로라의 답변을 보고, 오로라가 답한 핵심을 20자 이내의 한국어 명사구 한 줄로 요약해. "
        "예: 주말에 영화 보기 추천, MBTI 는 ENTJ, 좋아하는 음식은 마라탕. 요약만 출력해."
    )
    return ChatPrompt(system=system, user=f"사용자: {final_input}\n오로라: {reply.strip()}")


SUMMARY_TASK: TaskSpec[str | None] = TaskSpec(
    name="summary",
    max_attempts=MAX_ATTEMPTS,
    settings={
        Dialect.ORIGINAL: GenerationSettings(
            temperature=0.6, max_new_tokens=48, stop_strings=(ORIGINAL_STOP,), reject_at_tokens=44
        ),
        Dialect.CHAT: GenerationSettings(temperature=0.6, max_new_tokens=40, reject_at_tokens=40),
    },
    build_prompt=build_prompt,
    build_chat=build_chat,
    parse=parse_summary,
    fallback=lambda: None,
)
