"""What an LLM task is: prompt dialects, generation settings, a parser and a retry policy.

The four services (message, memory, summary, pose) differ only in a `TaskSpec`;
the engine and the attempt loop (`run_task`) are shared.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Generic, Literal, TypeVar

from ohlora.runtime import metrics

T = TypeVar("T")

# Plain-text markers of the original's fine-tuning format (UPSTREAM.md §2.1).
ANSWER_START = "(답변 시작)"
ANSWER_END = "(답변 종료)"
# The original stops on the token ids of "답변 종료)"; as text this works for any tokenizer.
ORIGINAL_STOP = "답변 종료)"


class Dialect(str, Enum):
    """How a task talks to its model.

    ORIGINAL: the Oh-LoRA v2 fine-tuning format ("... (답변 시작)"), for its published adapters.
    CHAT: the model's chat template with persona, format instructions and few-shot turns, for any
    instruct model without an adapter.
    TUNED: the chat template with one short instruction line and no few-shot turns, for adapters
    fine-tuned by `ohlora train` on those very prompts (docs/training.md): the prompt is a fraction
    of CHAT's, so prefill is too.
    """

    ORIGINAL = "original"
    CHAT = "chat"
    TUNED = "tuned"

    @property
    def chat_template(self) -> bool:
        return self is not Dialect.ORIGINAL


@dataclass(frozen=True)
class Opening:
    """An answer whose first token says what kind of answer it is: the memory's "[" (a fact follows) or its nothing.

    Sampled, that choice is a coin with the model's odds, and a small adapter's odds for "[" sit near one half on
    remarks and facts alike (docs/training.md, the memory's opening). An adapter calibrated for it (its
    `calibration.json`, written by `ohlora train-calibrate` on rows it was not trained on) gets the choice made by a
    threshold on the model's probability of `text` instead: at or above it the answer opens with `text` and the
    rest is sampled as usual; below it the answer is `otherwise`, written without sampling. Without a calibration
    the answer is sampled as before.
    """

    text: str
    otherwise: str
    # Where set, an opened answer starts with one of these (the memory's "[key:" for each key of its vocabulary),
    # chosen by the model among them; then it goes on freely.
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling and length limits of one task in one dialect.

    `reject_at_tokens` is the original's "probably truncated" rule: an attempt whose
    token count (total incl. prompt, or new only) reaches it is rejected.
    """

    temperature: float
    max_new_tokens: int | None = None
    max_total_tokens: int | None = None
    stop_strings: tuple[str, ...] = ()
    reject_at_tokens: int | None = None
    count_tokens: Literal["new", "total"] = "new"
    # When set, the answer is one of these texts: the engine samples only where they part ways and writes what
    # they share without sampling (ohlora.llm.answers). The parser still checks it.
    answers: tuple[str, ...] = ()
    # Which attempt of a task this is (run_task sets it): under llm.seed a retry draws from its own stream. Before,
    # a seeded retry repeated the rejected attempt word for word, up to the task's last attempt.
    attempt: int = 1
    # When set and the row's adapter is calibrated for it, the first token is decided by a threshold (Opening).
    opening: Opening | None = None
    # Where above 0, the words of the call's `mention` (run_task sets it from the request, by the task's own
    # `mention`) are nudged into the answer by this logit bias (ohlora.llm.decoding.Mention).
    mention_bias: float = 0.0
    mention: tuple[str, ...] = ()
    # Where above 0, no run of this many tokens is written twice in one answer (ohlora.llm.decoding.DecodeRow).
    no_repeat_ngram: int = 0

    def __post_init__(self) -> None:
        if (self.max_new_tokens is None) == (self.max_total_tokens is None):
            raise ValueError("set exactly one of max_new_tokens and max_total_tokens")


@dataclass(frozen=True)
class Attempt:
    """One generation, as the parser sees it."""

    text: str  # the continuation after the prompt, decoded
    number: int  # 1-based attempt number
    new_tokens: int
    total_tokens: int


class Reject(Exception):
    """Raised by a parser: the attempt is refused and the task retries."""


@dataclass(frozen=True)
class ChatPrompt:
    """A chat-dialect prompt: system instructions, few-shot turns, then the user message.

    Small instruct models follow a format far better when it is shown as earlier
    (user, assistant) turns than when it is only described in the system message.
    """

    system: str
    user: str
    examples: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, str]]:
        turns = [{"role": "system", "content": self.system}]
        for asked, answered in self.examples:
            turns += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
        return turns + [{"role": "user", "content": self.user}]


@dataclass(frozen=True)
class TaskSpec(Generic[T]):
    """A task is data: how to prompt, how to sample, how to parse, how often to retry.

    `build_prompt` receives the task's request fields as keyword arguments and returns
    the original-dialect string; `build_chat` returns the chat-dialect prompt (few-shot) and
    `build_tuned` the tuned dialect's short one. `ohlora train` fine-tunes on exactly these.
    The tuned dialect samples with the chat dialect's settings unless it has its own.
    """

    name: str
    max_attempts: int
    settings: dict[Dialect, GenerationSettings]
    build_prompt: Callable[..., str]
    build_chat: Callable[..., ChatPrompt]
    build_tuned: Callable[..., ChatPrompt]
    parse: Callable[[Attempt], T]
    fallback: Callable[[], T]
    # Brings a chat-dialect answer into the original's shape before the shared parser
    # sees it: chat answers do not start with the space the original's do, and a task
    # may accept an explicit word (e.g. "없음") where the original answers nothing.
    adapt_chat: Callable[[str], str] = lambda text: " " + text
    # The words of a request the answer should say where its settings give them a bias (the reply: a recalled
    # memory's value).
    mention: Callable[..., tuple[str, ...]] = lambda **fields: ()
    # The parsed value as the request's fields allow it, given the attempt's number; may raise Reject to retry
    # (the memory: a fact with a number the user never said). The identity for tasks that need nothing of the request.
    ground: Callable[..., T] = lambda value, attempt, **fields: value

    def settings_for(self, dialect: Dialect) -> GenerationSettings:
        if dialect is Dialect.TUNED and Dialect.TUNED not in self.settings:
            return self.settings[Dialect.CHAT]
        return self.settings[dialect]

    def prompt(self, dialect: Dialect, **fields: str) -> str | ChatPrompt:
        """The prompt of one call in one dialect (the engine tokenizes it; `ohlora train` appends the answer)."""
        if dialect is Dialect.ORIGINAL:
            return self.build_prompt(**fields)
        if dialect is Dialect.TUNED:
            return self.build_tuned(**fields)
        return self.build_chat(**fields)

    def adapt(self, dialect: Dialect, text: str) -> str:
        """A generated answer in the original's shape, as the shared parser expects it."""
        return self.adapt_chat(text) if dialect.chat_template else text


@dataclass
class TaskStats:
    attempts: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    elapsed_ms: float = 0.0
    fallback: bool = False


@dataclass(frozen=True)
class Progress:
    """The attempt in progress produced more text (streaming tasks only)."""

    attempt: int
    text: str


@dataclass(frozen=True)
class Rejected:
    attempt: int
    reason: str


@dataclass(frozen=True)
class Finished(Generic[T]):
    value: T
    stats: TaskStats = field(default_factory=TaskStats)


TaskEvent = Progress | Rejected | Finished


def token_rule_rejects(settings: GenerationSettings, new_tokens: int, total_tokens: int) -> bool:
    """The original's length-based rejection: True when the budget was (nearly) used up."""
    if settings.reject_at_tokens is None:
        return False
    count = total_tokens if settings.count_tokens == "total" else new_tokens
    return count >= settings.reject_at_tokens


async def run_task(
    generator: "TaskGenerator",
    spec: TaskSpec[T],
    dialect: Dialect,
    stream: bool = False,
    **fields: str,
) -> AsyncIterator[TaskEvent]:
    """The attempt loop shared by every task: generate, check, parse, retry, fall back."""
    settings = spec.settings_for(dialect)
    if settings.mention_bias > 0:
        settings = replace(settings, mention=spec.mention(**fields))
    prompt = spec.prompt(dialect, **fields)
    stats = TaskStats()
    started = time.perf_counter()
    for number in range(1, spec.max_attempts + 1):
        stats.attempts = number
        text, new_tokens, total_tokens = "", 0, 0
        async for update in generator.generate(prompt, replace(settings, attempt=number), stream=stream):
            text, new_tokens, total_tokens = spec.adapt(dialect, update.text), update.new_tokens, update.total_tokens
            if stream and not update.done:
                yield Progress(number, text)
        stats.generated_tokens += new_tokens
        stats.prompt_tokens += total_tokens - new_tokens
        if token_rule_rejects(settings, new_tokens, total_tokens):
            yield Rejected(number, f"token budget reached ({settings.count_tokens} tokens)")
            continue
        try:
            value = spec.ground(spec.parse(Attempt(text, number, new_tokens, total_tokens)), number, **fields)
        except Reject as exc:
            yield Rejected(number, str(exc))
            continue
        yield _finish(spec, value, stats, started)
        return
    stats.fallback = True
    yield _finish(spec, spec.fallback(), stats, started)


def _finish(spec: TaskSpec[T], value: T, stats: TaskStats, started: float) -> Finished[T]:
    stats.elapsed_ms = (time.perf_counter() - started) * 1000
    metrics.TASK_ATTEMPTS.labels(spec.name).observe(stats.attempts)
    if stats.fallback:
        metrics.TASK_FALLBACKS.labels(spec.name).inc()
    return Finished(value, stats)


async def complete_task(generator: "TaskGenerator", spec: TaskSpec[T], dialect: Dialect, **fields: str) -> Finished[T]:
    """Runs a non-streaming task to its result (accepted value or fallback)."""
    async for event in run_task(generator, spec, dialect, **fields):
        if isinstance(event, Finished):
            return event
    raise AssertionError("run_task ended without a result")


class TaskGenerator:
    """What run_task needs from the engine: generation bound to one adapter (or none)."""

    def generate(
        self, prompt: str | ChatPrompt, settings: GenerationSettings, stream: bool = False
    ) -> AsyncIterator["GenerationUpdate"]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class GenerationUpdate:
    text: str
    new_tokens: int
    total_tokens: int
    done: bool
