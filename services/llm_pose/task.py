"""The expression task: parse "(눈 X, 입 Y, 고개 돌림 Z)" and draw weights (UPSTREAM.md §2.5, §5.5)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ohlora.llm.task import (
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
EYES_WORDS = ("작게", "보통", "크게", "아주 크게")
MOUTH_WORDS = ("보통", "크게", "아주 크게")
POSE_WORDS = ("없음", "보통", "많이")
NEUTRAL = ("보통", "보통", "없음")


@dataclass(frozen=True)
class ExpressionWords:
    eyes: str
    mouth: str
    pose: str


def _field(text: str, label: str) -> str:
    try:
        return text.split(label)[1].split(",")[0].split(")")[0]
    except IndexError:
        raise Reject(f"no '{label.strip()}' field") from None


def check_expression(text: str) -> ExpressionWords:
    """The original's split-based parser; the first occurrence of each label wins."""
    text = strip_invisible(text)
    words = ExpressionWords(_field(text, "눈 "), _field(text, "입 "), _field(text, "고개 돌림 "))
    if words.eyes not in EYES_WORDS or words.mouth not in MOUTH_WORDS or words.pose not in POSE_WORDS:
        raise Reject(f"unknown words {words}")
    return words


def parse_expression(attempt: Attempt) -> ExpressionWords:
    return check_expression(attempt.text)


def _uniform(rng: random.Random, low: float, high: float) -> float:
    return low + (high - low) * rng.random()


def draw_weights(
    words: ExpressionWords, rng: random.Random | None = None, original_pose_bug: bool = False
) -> tuple[float, float, float]:
    """Weights added to w along the eyes / mouth / pose vectors (more negative = wider, more turn).

    The original picks the head-turn range by testing the *mouth* word (UPSTREAM.md §7.2.1);
    this tests the pose word. `original_pose_bug=True` reproduces the original for comparison.
    Draw order (eyes, mouth, pose) and ranges are the original's.
    """
    rng = rng or random.Random()
    eyes = {"작게": (-0.2, 0.1), "보통": (0.3, 0.6), "크게": (0.8, 1.1)}.get(words.eyes, (1.1, 1.2))
    mouth = {"보통": (0.4, 0.8), "크게": (1.0, 1.4)}.get(words.mouth, (1.4, 1.6))
    turn_word = words.mouth if original_pose_bug else words.pose
    if words.pose == "없음":
        pose = (-0.6, 0.3)
    elif turn_word == "보통":
        pose = (0.8, 1.5)
    else:
        pose = (1.5, 1.8)
    drawn = [_uniform(rng, *eyes), _uniform(rng, *mouth), _uniform(rng, *pose)]
    return (-1 * drawn[0], -1 * drawn[1], -1 * drawn[2])


# Every answer the chat dialects may give: the engine samples only the three choices and writes the rest
# (ohlora.llm.answers). The original dialect samples freely, as the original did, at its temperature of 1.5.
EXPRESSION_ANSWERS = tuple(f"(눈 {eyes}, 입 {mouth}, 고개 돌림 {pose})"
                           for eyes in EYES_WORDS for mouth in MOUTH_WORDS for pose in POSE_WORDS)


def build_prompt(reply: str) -> str:
    return f"{reply} {ANSWER_START}"


CHAT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("헐 대박! 진짜 축하해!!", "(눈 아주 크게, 입 아주 크게, 고개 돌림 없음)"),
    ("음... 그건 나도 잘 모르겠어", "(눈 작게, 입 보통, 고개 돌림 많이)"),
    ("나 ENTJ야! 계획 세우는 거 좋아해", "(눈 보통, 입 크게, 고개 돌림 없음)"),
    ("무슨 일 있었어? 내가 들어 줄게", "(눈 크게, 입 보통, 고개 돌림 보통)"),
)


def build_chat(reply: str) -> ChatPrompt:
    system = (
        "너는 가상 인간 오로라의 표정을 정하는 도우미야. 오로라가 한 말을 보고 어울리는 표정을 "
        "(눈 X, 입 Y, 고개 돌림 Z) 형식 한 줄로만 출력해. "
        "X 는 작게, 보통, 크게, 아주 크게 중 하나, Y 는 보통, 크게, 아주 크게 중 하나, "
        "Z 는 없음, 보통, 많이 중 하나야."
    )
    return ChatPrompt(system=system, user=reply.strip(), examples=CHAT_EXAMPLES)


TUNED_SYSTEM = "표정"


def build_tuned(reply: str) -> ChatPrompt:
    return ChatPrompt(system=TUNED_SYSTEM, user=reply.strip())


POSE_TASK: TaskSpec[ExpressionWords] = TaskSpec(
    name="pose",
    max_attempts=MAX_ATTEMPTS,
    settings={
        Dialect.ORIGINAL: GenerationSettings(temperature=1.5, max_new_tokens=32, stop_strings=(ORIGINAL_STOP,)),
        # A small instruct model loses the format at 1.5; variety comes from the weight draw.
        Dialect.CHAT: GenerationSettings(temperature=0.7, max_new_tokens=32, answers=EXPRESSION_ANSWERS),
    },
    build_prompt=build_prompt,
    build_chat=build_chat,
    build_tuned=build_tuned,
    parse=parse_expression,
    fallback=lambda: ExpressionWords(*NEUTRAL),
)
