"""The memory-extraction task: normalisation and validity rules of the original (UPSTREAM.md §2.3)."""

from __future__ import annotations

from dataclasses import dataclass

from ohlora.llm.final_input import split_final_input
from ohlora.llm.numbers import numbers_in, said_numbers, said_or_retry
from ohlora.llm.persona import MEMORY_KEYS
from ohlora.llm.task import (
    ANSWER_END,
    ANSWER_START,
    ORIGINAL_STOP,
    Attempt,
    ChatPrompt,
    Dialect,
    GenerationSettings,
    Opening,
    Reject,
    TaskSpec,
)
from services.llm_message.task import strip_invisible

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Fact:
    key: str
    value: str
    text: str  # "[key: value]" as normalised


def bracket_like_original(text: str) -> str:
    """One pass of the original's reshaping of a model answer towards "[key: value]" (brackets, ": ").

    No checks and not idempotent: `check_memory` decides whether the result is a memory, and
    `checked_memory_fixed_point` is what stored memories go through.
    """
    text = strip_invisible(text.replace(ANSWER_END, ""))
    for old, new in (("(", "["), (")", "]"), ("{", "["), ("}", "]"), (" : ", ": ")):
        text = text.replace(old, new)
    if "[" in text and "]" in text:
        text = "[" + text.split("[")[1].split("]")[0] + "]"
    if ": " not in text:
        text = text.replace(":", ": ")
    if "[" not in text and "]" not in text and ": " in text:
        text = "[" + text + "]"
    return text


def check_memory(text: str) -> str:
    """Returns the normalised answer ('' or blank = nothing to remember) or raises Reject.

    The original crashes with IndexError on an exactly empty answer; here it means
    "nothing to remember", as the original's own comment and its v3 intend.
    """
    text = bracket_like_original(text)
    if "답변 종료" in text or "답변종료" in text:
        raise Reject("stray end mark")
    if text.strip() == "":
        return text
    inner = text[1:-1]
    well_formed = (
        text.startswith("[")
        and text.endswith("]")
        and ": " in text
        and text.count("[") == 1
        and text.count("]") == 1
        and text.count(":") == 1
        and inner.split(":")[0].strip() != ""
        and inner.split(":")[-1].strip() != ""
    )
    if not well_formed:
        raise Reject("not a single [key: value]")
    if "�" in text or "     " in text or "http" in text:
        raise Reject("broken character, five spaces or link")
    return text


def to_fact(text: str) -> Fact | None:
    """A checked answer as a Fact, or None for "nothing to remember"."""
    if text.strip() == "":
        return None
    key, value = text[1:-1].split(":")
    return Fact(key=key.strip(), value=value.strip(), text=text)


def checked_memory_fixed_point(text: str) -> str:
    """The form a memory is stored in: check_memory repeated until nothing changes, line breaks made spaces.

    The original's normaliser is not idempotent ("0 :0" -> "[0 : 0]" -> "[0: 0]"), and it keeps line
    separators inside a value ("0:\u20280"). What is stored must be one line and a fixed point, or a memory
    would change or split in two when its exported file is imported again. So every stored memory, extracted
    or imported, goes through this; check_memory itself stays the original's (fixtures).
    """
    text = check_memory(text)
    for _ in range(len(text) + 1):  # each pass only removes or replaces characters, so this ends
        again = check_memory(" ".join(text.splitlines()))
        if again == text:
            break
        text = again
    return text


def parse_memory(attempt: Attempt) -> Fact | None:
    return to_fact(checked_memory_fixed_point(attempt.text))


def ground_fact(fact: Fact | None, attempt: int, final_input: str) -> Fact | None:
    """The fact if every number in its value is one the user's turn said; else one more attempt, then nothing.

    The small tuned model writes numbers of its own into facts: "내 생일 기억나?" gave `[생일: 31일]`, which would
    replace the birthday she had remembered, "내일은 일찍 자 볼게" gave `[내일 일정: 오전 5시 볼]`, and "서른 살"
    `[나이: 29살]`. A new sample often has the right number, so the first such fact is retried; after that the turn
    remembers nothing (more retries would decode beside the reply for long: the opening decides "[" alike each time).
    A number said in words or as a named day counts (`said_numbers`); only the turn's own words count, not a
    recalled memory or summary in front of it.
    """
    if fact is None:
        return None
    said = said_numbers(split_final_input(final_input).text)
    return fact if said_or_retry(numbers_in(fact.value), said, attempt, "a number in the fact") else None


def build_prompt(final_input: str) -> str:
    return f"{final_input} {ANSWER_START}"


# The chat dialect's explicit "nothing to remember"; the original's adapters answer nothing at all.
NOTHING = "없음"
CHAT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("나 내일 친구 생일 파티 가", "[내일 일정: 친구 생일 파티]"),
    ("로라야 안녕!", NOTHING),
    ("요즘 회사 일 때문에 너무 지쳐", "[상태: 회사 일로 지침]"),
    ("너는 무슨 색 좋아해?", NOTHING),
    ("나 강아지 키워", "[반려동물: 강아지]"),
    ("주말에 뭐 하면 좋을까?", NOTHING),
)


def build_chat(final_input: str) -> ChatPrompt:
    system = (
        "너는 대화에서 사용자에 대해 기억할 사실을 뽑는 도우미야. "
        "사용자의 말에 사용자의 일정, 상태, 감정, 취향, 사는 곳, 가족이나 반려동물처럼 기억할 만한 사실이 있으면 "
        f"[키: 값] 형식으로 딱 하나만 출력해. 기억할 사실이 없으면 {NOTHING} 이라고만 출력해. 설명은 쓰지 마."
    )
    # Only the user's own words: a summary in front is Oh-LoRA's, not a fact about the user.
    return ChatPrompt(system=system, user=split_final_input(final_input).text, examples=CHAT_EXAMPLES)


def adapt_chat(text: str) -> str:
    """The explicit nothing becomes the original's empty answer; anything else gets the original's leading space."""
    return "" if text.strip().strip(".[]()") == NOTHING else " " + text


TUNED_SYSTEM = "기억할 사실"


def build_tuned(final_input: str) -> ChatPrompt:
    return ChatPrompt(system=TUNED_SYSTEM, user=split_final_input(final_input).text)


EXTRACT_TASK: TaskSpec[Fact | None] = TaskSpec(
    name="memory",
    max_attempts=MAX_ATTEMPTS,
    settings={
        Dialect.ORIGINAL: GenerationSettings(
            temperature=0.6, max_new_tokens=24, stop_strings=(ORIGINAL_STOP,), reject_at_tokens=24
        ),
        Dialect.CHAT: GenerationSettings(temperature=0.6, max_new_tokens=32, reject_at_tokens=32),
        # A fact or nothing: "[" against the explicit nothing, by the adapter's calibrated threshold where it has one;
        # a fact's key is one of the vocabulary's.
        Dialect.TUNED: GenerationSettings(temperature=0.6, max_new_tokens=32, reject_at_tokens=32,
                                          opening=Opening(text="[", otherwise=NOTHING,
                                                          after=tuple(f"[{key}:" for key in MEMORY_KEYS))),
    },
    build_prompt=build_prompt,
    build_chat=build_chat,
    build_tuned=build_tuned,
    parse=parse_memory,
    ground=ground_fact,
    fallback=lambda: None,
    adapt_chat=adapt_chat,
)
