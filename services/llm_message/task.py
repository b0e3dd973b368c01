"""The reply task: prompts, the original's rejection rules and cleaning (UPSTREAM.md §2.2)."""

from __future__ import annotations

from ohlora.llm.final_input import split_final_input
from ohlora.llm.numbers import date_numbers_in, said_numbers, said_or_retry
from ohlora.llm.persona import PERSONA
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

FALLBACK_REPLY = "(읽씹)"
MAX_ATTEMPTS = 15
# The original's prompt guard: inputs longer than this many tokens get no reply.
MAX_INPUT_TOKENS = 48
TOO_LONG_MESSAGE = (
    "[SYSTEM MESSAGE] 너무 긴 질문은 오로라👱‍♀️ 에게 부담 돼요! "
    "그런 질문은 오로라의 절친 혜나 🌹 (LLM Hyena) 에게 해 주세요! 😢"
)
STRAY_SYMBOLS = ("➤", "⊙", "➥", "⇨", "➯", "⑤", "⑥")
FORBIDDEN_QUOTES = ('"', "”", "“", "’")
INVISIBLE = ("\u200b", "\xa0")


def strip_invisible(text: str) -> str:
    for ch in INVISIBLE:
        text = text.replace(ch, "")
    return text


def drop_bracketed_prefix(text: str) -> str:
    """v1 leftover kept for the published adapters: text between the 1st and 2nd ']' survives."""
    if "[" in text and "]" in text:
        return text.split("]")[1]
    return text


def check_reply(text: str, attempt: int) -> str:
    """The original's per-attempt rules; returns the accepted text (end mark removed) or raises Reject."""
    text = drop_bracketed_prefix(strip_invisible(text))
    if text.replace("\n", "").replace(ANSWER_END, "").replace(" ", "") == "":
        raise Reject("empty answer")
    without_mark = text.replace(ANSWER_END, "")
    if "답변 종료" in without_mark or "답변종료" in without_mark:
        raise Reject("stray end mark")
    compact = text.replace(" ", "")
    if "(사용자" in compact or "요약)" in compact:
        raise Reject("leaked prompt marker")
    if attempt < 2 and not text.startswith(" "):
        raise Reject("first attempt must start with a space")
    if any(q in text for q in FORBIDDEN_QUOTES):
        raise Reject("quotation mark")
    if "�" in text:
        raise Reject("broken character")
    if "     " in text:
        raise Reject("five spaces")
    if "http" in text:
        raise Reject("link")
    return without_mark


def clean_reply(text: str) -> str:
    """The original's `clean_llm_answer`: a leading '- ' and stray arrow symbols go."""
    if text.startswith(" - ") or text.startswith("- "):
        text = text[2:]
    for symbol in STRAY_SYMBOLS:
        text = text.replace(symbol, "")
    return text


# Other tasks' answers a reply must not be: the memory's "nothing", and the expression's "(눈 …, 입 …, 고개 돌림 …)".
MEMORY_NOTHING = "없음"
EXPRESSION_WORDS = "고개돌림"


def parse_reply(attempt: Attempt) -> str:
    reply = clean_reply(check_reply(attempt.text, attempt.number))
    if not reply.strip():
        # Found by tests/test_fuzz.py: an answer of only stray symbols ("⇨") passes the original's checks and
        # cleans to nothing; the original would show an empty line, here the attempt is retried.
        raise Reject("empty after cleaning")
    if reply.strip(" .") == MEMORY_NOTHING or EXPRESSION_WORDS in reply.replace(" ", ""):
        # Another task's answer: the multi-task adapter answered 2 of 23 summary-less valid turns with the memory's
        # "nothing", and one mini-timing turn with "새벽이 떨어, 눈 보통, 입 보통, 고개 돌림 없음" (docs/training.md).
        raise Reject("another task's answer, not a reply")
    return reply


# Numbers her persona says (born 2003-10-11, 22): a reply may tell her own birthday or age.
PERSONA_NUMBERS = frozenset(said_numbers(PERSONA))


def ground_reply(reply: str, attempt: int, final_input: str) -> str:
    """The reply, unless on its first attempt it has a date or age that neither the final input nor her persona says.

    With a remembered date in front of the turn the small model goes on inventing more: "3월 14일이면 3월 24일이야",
    "13년 11월 12일이면 100년 11월 13일이야", and asked her favourite season, "10월 20일부터 12월 15일까지". None of the
    dataset's replies has such a number (durations and times, "30분만", "밤 9시", are not dates and stay free). One
    retry, then the reply stands: a reply is never dropped for it, and a second retry would double the wait.
    """
    said_or_retry(date_numbers_in(reply), said_numbers(final_input) | PERSONA_NUMBERS, attempt, "a date or age")
    return reply  # on a later attempt it stands, whatever its dates


def preview_reply(partial: str) -> str:
    """What the client may show while an attempt is still being generated.

    Same transformations as the final answer, minus a trailing piece that could still
    turn into the end mark, so accepted text streams without jumps.
    """
    text = strip_invisible(partial)
    if ANSWER_END in text:
        text = text.split(ANSWER_END)[0]
    else:
        for cut in range(len(ANSWER_END) - 1, 0, -1):
            if text.endswith(ANSWER_END[:cut]):
                text = text[:-cut]
                break
    if "[" in text:
        # A bracket pair may still close: show nothing of it until the answer settles.
        text = drop_bracketed_prefix(text) if "]" in text else text.split("[")[0]
    return clean_reply(text)


def build_prompt(final_input: str) -> str:
    return f"{final_input} {ANSWER_START}"


# Few-shot turns written for this project: short, warm, casual speech and the persona's facts.
CHAT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("로라야 나 다음 주에 발표 있어", "오 발표? 넌 준비 잘하니까 분명 잘할 거야 💪"),
    ("너 무슨 공부해?", "나 샘올대학교 인공지능학과 3학년이야! 요즘 공부가 제일 재밌어"),
    ("오늘 뭐 하지?", "날씨 좋으면 산책 어때? 나도 바람 쐬고 싶다"),
    ("오늘 너무 우울해", "무슨 일 있었어? 내가 다 들어 줄게"),
)


def build_chat(final_input: str) -> ChatPrompt:
    """Persona and rules; the recalled memory or last summary as context; only the user's words as the message."""
    turn = split_final_input(final_input)
    context = f" {turn.context()}. 필요할 때만 자연스럽게 참고해." if turn.context() else ""
    system = (
        f"{PERSONA}{context} "
        "사용자의 말에 한국어 반말로 한두 문장, 50자 이내로 짧게 대답해. 사용자의 말이나 예시 대화를 그대로 따라 하지 마. "
        "따옴표와 링크는 쓰지 말고, 이모지는 가끔 하나 정도만 써."
    )
    return ChatPrompt(system=system, user=turn.text, examples=CHAT_EXAMPLES)


# The logit bias a tuned reply gives the words of a recalled memory until it has said one (ohlora.llm.decoding,
# Mention). The adapter learnt to use a memory in front of the turn, and does in about half of the turns that
# carry one; chosen on the train split's memory turns (docs/training.md, "The reply says what she remembers").
MEMORY_MENTION_BIAS = 2.0

# The tuned dialect's one line; who she is and how she talks is in the adapter (docs/training.md). Every prompt
# token is paid in prefill on every call, and Korean costs Qwen's tokenizer about a token a syllable.
TUNED_SYSTEM = "너는 오로라야. 친구에게 반말로 답해."


# The tuned reply samples cooler than the original's 0.6, and never writes a run of four tokens twice. Read side by
# side on 57 inputs (docs/training.md, "Sampling the tuned reply"): at 0.6 the 1.5B drifted off the turn more often;
# at 0.4 it looped ("ㅋㅋㅋㅋ…" to its token budget, "오늘은 뭐 했어? 오늘은 뭐 했어?") unless repeats are banned.
TUNED_TEMPERATURE = 0.4
TUNED_NO_REPEAT_NGRAM = 4


def build_tuned(final_input: str) -> ChatPrompt:
    """The final input as it is, markers included: the fine-tuned adapter learned to use a memory or summary in it."""
    return ChatPrompt(system=TUNED_SYSTEM, user=final_input)


REPLY_TASK: TaskSpec[str] = TaskSpec(
    name="message",
    max_attempts=MAX_ATTEMPTS,
    settings={
        Dialect.ORIGINAL: GenerationSettings(
            temperature=0.6,
            max_total_tokens=96,
            stop_strings=(ORIGINAL_STOP,),
            reject_at_tokens=91,
            count_tokens="total",
        ),
        Dialect.CHAT: GenerationSettings(temperature=0.6, max_new_tokens=80, reject_at_tokens=80),
        Dialect.TUNED: GenerationSettings(temperature=TUNED_TEMPERATURE, max_new_tokens=80, reject_at_tokens=80,
                                          mention_bias=MEMORY_MENTION_BIAS, no_repeat_ngram=TUNED_NO_REPEAT_NGRAM),
    },
    build_prompt=build_prompt,
    build_chat=build_chat,
    build_tuned=build_tuned,
    parse=parse_reply,
    ground=ground_reply,
    fallback=lambda: FALLBACK_REPLY,
    mention=lambda final_input: split_final_input(final_input).memory_news,
)
