"""The summary task: the original's rules (UPSTREAM.md §2.4)."""

from __future__ import annotations

from ohlora.llm.final_input import split_final_input
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


def _exchange(final_input: str, reply: str) -> str:
    return f"사용자: {final_input}\n오로라: {reply.strip()}"


CHAT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (_exchange("너 MBTI 뭐야?", "나 ENTJ야! 계획 세우는 거 완전 좋아해"), "MBTI 는 ENTJ, 계획 세우기 좋아함"),
    (_exchange("주말에 뭐 하지?", "날씨 좋으면 한강에서 자전거 타는 거 어때?"), "주말에 한강 자전거 추천"),
    (_exchange("나 다음 주에 발표 있어", "오 발표? 넌 준비 잘하니까 분명 잘할 거야"), "발표 응원"),
)


def build_chat(final_input: str, reply: str) -> ChatPrompt:
    system = (
        "너는 대화 요약 도우미야. 사용자의 말과 오로라의 답변을 보고, 오로라가 답한 핵심을 "
        "20자 이내의 한국어 한 줄로 요약해. 요약만 출력해."
    )
    return ChatPrompt(system=system, user=_exchange(split_final_input(final_input).text, reply), examples=CHAT_EXAMPLES)


TUNED_SYSTEM = "답변 요약"


def build_tuned(final_input: str, reply: str) -> ChatPrompt:
    return ChatPrompt(system=TUNED_SYSTEM, user=_exchange(split_final_input(final_input).text, reply))


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
    build_tuned=build_tuned,
    parse=parse_summary,
    fallback=lambda: None,
)
