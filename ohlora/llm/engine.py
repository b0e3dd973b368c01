"""The LLM engine shared by the four tasks: one base model, any number of LoRA adapters.

Requests queue up (bounded; a full queue is RESOURCE_EXHAUSTED). One scheduler runs one batch at a time: it
takes the waiting requests oldest first, whatever their adapter, and requests that arrive while a batch runs
join it between two forward passes (continuous batching, ohlora.llm.decoding), so a turn's memory extraction
decodes beside its reply, not after it. Rows of different LoRA adapters share one forward pass of the base: each
LoRA layer adds its adapter's delta to its own rows (ohlora.llm.multi_lora, or peft's `adapter_names` for what
that cannot stack), as S-LoRA, Punica and vLLM batch adapters. Each row keeps its own temperature, token budget
and stop strings, streams its text as tokens arrive, and leaves the batch when it is done. A row whose answer
comes from a fixed set (the expression) writes the stretches its answers share in one forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, PreTrainedTokenizerBase

from ohlora.errors import InvalidInput, QueueFull
from ohlora.llm.answers import AnswerTrie
from ohlora.llm.calibration import CalibratedOpening, read_opening
from ohlora.llm.decoding import DecodeRow, Mention, OpeningRule, decode, opening_probability
from ohlora.llm.multi_lora import StackedLoRA
from ohlora.llm.quantize import quantize_weights
from ohlora.llm.task import ChatPrompt, GenerationSettings, GenerationUpdate, Opening, TaskGenerator
from ohlora.llm.vocabulary import HangulSyllableGuard, OutputVocabulary, restrict_output
from ohlora.runtime import metrics
from ohlora.runtime.device import choose_dtype, resolve_device

log = logging.getLogger(__name__)

@dataclass
class EngineConfig:
    base_model: str
    adapters: dict[str, str] = field(default_factory=dict)
    dtype: str = "auto"
    device: str = "auto"
    max_batch_size: int = 8
    max_queue: int = 64
    trust_remote_code: bool = False
    batch_window_ms: float = 0.0
    seed: int | None = None
    # False: a batch holds one adapter's requests only (the others wait for the next batch).
    mixed_adapter_batches: bool = True
    quantize: str | None = None  # "int8" or "int8-decode": weight-only int8 linear layers (ohlora.llm.quantize)
    # Merged into the base weights at load, before `adapters` attach: every request runs on it, and a token costs
    # what the bare base costs (LLMSettings.adapters_for decides what is merged).
    base_adapter: str | None = None
    # "korean": the output layer computes only the tokens a Korean reply uses (ohlora.llm.vocabulary).
    output_vocabulary: OutputVocabulary = "full"


@dataclass
class _Request:
    prompt_ids: list[int]
    adapter: str | None
    settings: GenerationSettings
    stream: bool
    updates: asyncio.Queue[GenerationUpdate]
    loop: asyncio.AbstractEventLoop
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)
    generator: torch.Generator | None = None  # set under llm.seed

    @property
    def max_new(self) -> int:
        if self.settings.max_new_tokens is not None:
            return self.settings.max_new_tokens
        assert self.settings.max_total_tokens is not None
        return max(0, self.settings.max_total_tokens - len(self.prompt_ids))


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | ChatPrompt) -> list[int]:
    """Prompt token ids, as served and as `ohlora train` fine-tunes on them (the answer's ids follow these)."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInput("the chat dialects need a tokenizer with a chat template")
    text = tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


class _BatchMonitor:
    """Called after every step: decodes each row, streams it, decides which rows are done.

    A row that is done gets its final update at once, not when the batch ends: a short answer
    (an expression) batched with a long one (a summary) is not held back by it.
    """

    def __init__(self, engine: "LLMEngine", batch: list[_Request]) -> None:
        self.engine = engine
        self.batch = batch
        self.done = [req.max_new == 0 for req in batch]
        self.delivered = [False] * len(batch)
        self.texts = [""] * len(batch)
        self.counts = [0] * len(batch)
        self.prompt_texts = [engine.decode(req.prompt_ids) for req in batch]

    def add(self, req: _Request) -> None:
        """A request that joined the running batch (the caller appended it to the batch)."""
        self.done.append(req.max_new == 0)
        self.delivered.append(False)
        self.texts.append("")
        self.counts.append(0)
        self.prompt_texts.append(self.engine.decode(req.prompt_ids))

    def __call__(self, rows: list[DecodeRow]) -> list[bool]:
        for index, (req, row) in enumerate(zip(self.batch, rows)):
            ids = row.generated
            if self.done[index] or not (ids or row.complete):
                continue
            self.counts[index] = len(ids)
            text = self.engine.decode(req.prompt_ids + ids)[len(self.prompt_texts[index]) :]
            self.texts[index] = text
            finished = (
                req.cancelled
                or row.complete
                or len(ids) >= req.max_new
                or ids[-1] in self.engine.eos_ids
                or any(stop in text for stop in req.settings.stop_strings)
            )
            if finished:
                self.done[index] = True
                self.deliver_final(index)
            elif req.stream:
                # A trailing U+FFFD is an incomplete multi-byte character: wait for its rest.
                self.engine.deliver(req, GenerationUpdate(text.rstrip("\ufffd"), len(ids), len(req.prompt_ids) + len(ids), False))
        return list(self.done)

    def deliver_final(self, row: int) -> None:
        if self.delivered[row]:
            return
        self.delivered[row] = True
        req, count = self.batch[row], self.counts[row]
        self.engine.deliver(req, GenerationUpdate(self.texts[row], count, len(req.prompt_ids) + count, True))


class LLMEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        adapters: list[str],
        max_batch_size: int = 8,
        max_queue: int = 64,
        name: str = "llm",
        batch_window_ms: float = 0.0,
        mixed_adapter_batches: bool = True,
        seed: int | None = None,
        aliases: dict[str, str | None] | None = None,
        guards: list[LogitsProcessor] | None = None,
        openings: dict[str, CalibratedOpening] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.adapters = adapters
        # Task name -> loaded adapter, where tasks share one adapter file (a multi-task adapter is loaded once,
        # so the four tasks' requests form plain one-adapter batches).
        self.aliases = aliases or {}
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.name = name
        # Run before sampling on every row (the Korean vocabulary's syllable guard, ohlora.llm.vocabulary).
        self.guards = guards or []
        # A batch starts no earlier than this after its oldest request arrived, so requests sent together (a turn's
        # reply and memory extraction) share their prompts' forward pass; without it the second joins at the next
        # step. Off by default: on a CPU, prefill is compute-bound and sharing it delayed the reply's first text
        # (mini, docs/benchmarks.md).
        self.batch_window = batch_window_ms / 1000
        self.mixed_adapter_batches = mixed_adapter_batches and self._adapters_can_mix()
        # Mixed batches run on stacked adapters where they are plain LoRA, else through peft's adapter_names. One
        # adapter is stacked too: its rows share batches with the bare base's (mini's memory extraction beside the
        # reply), where peft's adapter_names cost a mixed step 10-20 % more (AVX2-capped fp32, docs/benchmarks.md).
        self.stacked = StackedLoRA.build(model, adapters) if self.mixed_adapter_batches and adapters else None
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = {eos} if eos is not None else set()
        ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self.eos_ids = ids
        self._waiting: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._torch_lock = threading.Lock()
        self._queue_lock = threading.Lock()  # _waiting: appended by the event loop, taken by it and by decoding
        # llm.seed: each request draws from its own generator, seeded by the seed and its prompt and adapter,
        # so a run repeats whatever batches the requests happened to share (benchmarks compare like with like).
        self.seed = seed
        # (adapters, rows) of recent batches: what batching actually did, for logs and tests. `adapters` is the
        # adapter's name (None: the bare base), or its sorted names joined by "+" for a mixed batch.
        self.recent_batches: deque[tuple[str | None, int]] = deque(maxlen=256)
        self._answer_tries: dict[tuple[tuple[str, ...], bool], AnswerTrie] = {}
        # Loaded adapter -> its calibrated opening (ohlora.llm.calibration): where a task's settings declare that
        # opening, the adapter's rows decide it by the threshold.
        self.openings = openings or {}
        self._opening_rules: dict[tuple[str, Opening], OpeningRule] = {}

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: EngineConfig) -> "LLMEngine":
        """Loads the base from a local folder or a hub id and attaches each adapter by name.

        Adapters are attached to the configured base whatever their adapter_config.json
        names as base (the original needed a manual edit of that file).
        """
        device = resolve_device(config.device)
        choice = choose_dtype(config.dtype, device)
        dtype = choice.dtype
        log.info("loading base %s on %s as %s (%s)", config.base_model, device, choice.name, choice.reason)
        tokenizer = AutoTokenizer.from_pretrained(config.base_model, trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            config.base_model, dtype=dtype, trust_remote_code=config.trust_remote_code
        )
        if config.base_adapter:
            from peft import PeftModel

            # Unmerged, every LoRA layer adds two small matmuls (and, over a bf16 base, casts to the adapter's fp32)
            # to every token; mini-timing before merging: a fine-tuned turn 9.87 s against 8.61 s for the bare base
            # on prompts five times as long (docs/benchmarks.md).
            model = PeftModel.from_pretrained(model, config.base_adapter).merge_and_unload()
            log.info("adapter %s merged into the base weights (every request runs on it)", config.base_adapter)
        by_path: dict[str, str] = {}
        aliases = {name: by_path.setdefault(path, name) for name, path in config.adapters.items()}
        names = list(by_path.values())
        if names:
            from peft import PeftModel

            first = names[0]
            model = PeftModel.from_pretrained(model, config.adapters[first], adapter_name=first)
            for name in names[1:]:
                model.load_adapter(config.adapters[name], adapter_name=name)
        openings = {name: opening for name in names if (opening := read_opening(config.adapters[name]))}
        restrict_output(model, tokenizer, config.output_vocabulary)  # after the merge: its rows are the merged ones
        guards = [HangulSyllableGuard(tokenizer)] if config.output_vocabulary == "korean" else []
        if config.quantize == "int8-decode" and device.type != "cpu":
            log.info("llm.quantize = \"int8-decode\" is for CPUs (its kernel is torch's CPU one): weights stay as loaded")
        else:
            quantize_weights(model, config.quantize)  # after adapters: LoRA keeps float A/B over int8 base layers
        model.to(device)
        model.eval()
        return cls(model, tokenizer, device, names, config.max_batch_size, config.max_queue, Path(config.base_model).name,
                   config.batch_window_ms, config.mixed_adapter_batches, config.seed, aliases, guards, openings)

    def _adapters_can_mix(self) -> bool:
        """peft mixes LoRA adapters in one batch, but not DoRA ones or merged weights: those batch per adapter."""
        configs = getattr(self.model, "peft_config", {})
        dora = [name for name, c in configs.items() if getattr(c, "use_dora", False)]
        if dora:
            log.info("adapters %s use DoRA, which peft cannot mix in one batch: batches hold one adapter each", dora)
        return not dora

    @staticmethod
    def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------ text
    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def count_tokens(self, text: str) -> int:
        """Token count as the original measures it (`tokenizer.encode(text)`)."""
        return len(self.tokenizer.encode(text))

    def encode_prompt(self, prompt: str | ChatPrompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    # ------------------------------------------------------------ serving
    def has_adapter(self, name: str) -> bool:
        return name in self.adapters or name in self.aliases

    def for_adapter(self, adapter: str | None, delay_seconds: float = 0.0) -> "AdapterGenerator":
        """A task name that aliases a loaded adapter (or the merged one: None) resolves to it."""
        adapter = self.aliases.get(adapter, adapter) if adapter is not None else None
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"adapter {adapter!r} is not loaded (loaded: {self.adapters})")
        return AdapterGenerator(self, adapter, delay_seconds)

    def start(self) -> None:
        if self._scheduler is None:
            self.prepare_tokenizer(self.tokenizer)
            self._scheduler = asyncio.get_running_loop().create_task(self._schedule(), name=f"{self.name}-scheduler")

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            try:
                await self._scheduler
            except asyncio.CancelledError:
                pass
            self._scheduler = None

    def submit(self, prompt_ids: list[int], adapter: str | None, settings: GenerationSettings, stream: bool) -> _Request:
        if len(self._waiting) >= self.max_queue:
            metrics.QUEUE_REJECTIONS.labels(self.name).inc()
            raise QueueFull(f"the {self.name} queue is full ({self.max_queue} waiting); retry later")
        req = _Request(prompt_ids, adapter, settings, stream, asyncio.Queue(), asyncio.get_running_loop())
        if self.seed is not None:
            key = f"{self.seed}|{adapter}|{settings.temperature}|".encode() + bytes(str(prompt_ids), "ascii")
            if settings.attempt > 1:  # a task's retry (same prompt) samples anew, not the attempt that was rejected
                key += b"|attempt %d" % settings.attempt
            req.generator = torch.Generator().manual_seed(zlib.crc32(key))
        with self._queue_lock:
            self._waiting.append(req)
        metrics.QUEUE_DEPTH.labels(self.name).set(len(self._waiting))
        self._wakeup.set()
        return req

    def deliver(self, req: _Request, update: GenerationUpdate) -> None:
        req.loop.call_soon_threadsafe(req.updates.put_nowait, update)

    async def _schedule(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._waiting[0].arrived + self.batch_window - time.monotonic()
            if wait > 0:  # a fresh request: give the ones sent with it a moment to arrive
                await asyncio.sleep(wait)
            batch = self._take(self.max_batch_size, None if self.mixed_adapter_batches else self._waiting[0].adapter)
            if not batch:
                continue
            self.recent_batches.append(self._batch_label(batch))
            try:
                await asyncio.to_thread(self._run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - reported to every waiting caller, those who joined included
                log.exception("batch failed")
                for req in batch:
                    req.loop.call_soon_threadsafe(req.updates.put_nowait, exc)  # type: ignore[arg-type]

    def _take(self, room: int, adapter: str | None, running: bool = False) -> list[_Request]:
        """Up to `room` waiting requests, oldest first (of `adapter` only, when set), off the queue.

        Cancelled ones are dropped. A running batch (`running`) takes only requests with tokens to generate.
        Called from the scheduler and from the decoding thread (requests joining a running batch): under a lock.
        """
        with self._queue_lock:
            fits = [r for r in self._waiting if adapter is None or r.adapter == adapter]
            if running:
                fits = [r for r in fits if r.max_new > 0 and not r.cancelled]
            taken = fits[: max(0, room)]
            self._waiting = [r for r in self._waiting if r not in taken]
        metrics.QUEUE_DEPTH.labels(self.name).set(len(self._waiting))
        return [r for r in taken if not r.cancelled]

    @staticmethod
    def _batch_label(batch: list[_Request]) -> tuple[str | None, int]:
        adapters = sorted({r.adapter or "" for r in batch})
        return batch[0].adapter if len(adapters) == 1 else "+".join(a or "base" for a in adapters), len(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        """Decodes `batch`; requests that arrive meanwhile join it (and `batch`) between two forward passes."""
        started = time.perf_counter()
        monitor = _BatchMonitor(self, batch)
        rows = [self._row(r) for r in batch]

        def admit(running: int) -> list[DecodeRow]:
            joined = self._take(self.max_batch_size - running, None if self.mixed_adapter_batches else batch[0].adapter,
                                running=True)
            for req in joined:
                batch.append(req)
                monitor.add(req)
            if joined and self.recent_batches:  # this batch's entry (batches run one at a time)
                self.recent_batches[-1] = self._batch_label(batch)
            return [self._row(r) for r in joined]

        if any(r.max_new > 0 for r in batch):
            with self._torch_lock, torch.inference_mode():
                decode(self.model, rows, pad_id=self.tokenizer.pad_token_id, end_ids=self.eos_ids, guards=self.guards,
                       monitor=monitor, adapters_of=self._adapters_of, admit=admit)
        elapsed = time.perf_counter() - started
        tokens = sum(monitor.counts)
        metrics.GENERATED_TOKENS.labels(self.name).inc(tokens)
        metrics.BATCH_SIZE.labels(self.name).observe(len(batch))
        if elapsed > 0:
            metrics.TOKENS_PER_SECOND.labels(self.name).set(tokens / elapsed)
        for row in range(len(batch)):
            monitor.deliver_final(row)  # rows cancelled mid-batch, or with nothing to generate

    def _row(self, req: _Request) -> DecodeRow:
        return DecodeRow(req.prompt_ids, req.max_new, req.settings.temperature, req.generator, req.adapter,
                         self._answer_trie(req.settings.answers), opening=self._opening_rule(req),
                         mention=self._mention(req.settings), no_repeat_ngram=req.settings.no_repeat_ngram)

    def _mention(self, settings: GenerationSettings) -> Mention | None:
        """The words to nudge as token paths, each as it starts an answer and as it follows a space."""
        if settings.mention_bias <= 0 or not settings.mention:
            return None
        paths = {tuple(self.tokenizer.encode(text, add_special_tokens=False))
                 for word in settings.mention for text in (word, " " + word)}
        return Mention(tuple(p for p in paths if p), settings.mention_bias)

    def _opening_rule(self, req: _Request) -> OpeningRule | None:
        """The request's opening as token ids, where its task declares one and its adapter is calibrated for it
        (built once per adapter and opening: this runs for every request)."""
        opening = req.settings.opening
        calibrated = self.openings.get(req.adapter) if opening is not None and req.adapter is not None else None
        if opening is None or calibrated is None or calibrated.text != opening.text:
            return None
        key = (req.adapter, opening)
        if key not in self._opening_rules:
            self._opening_rules[key] = OpeningRule(
                self.first_token(opening.text), calibrated.threshold,
                self._trie(opening.after or (opening.text,), prefixes=True), self._trie((opening.otherwise,)))
        return self._opening_rules[key]

    def first_token(self, text: str) -> int:
        return self.tokenizer.encode(text, add_special_tokens=False)[0]

    def next_token_probability(self, prompt: str | ChatPrompt, adapter: str | None, text: str) -> float:
        """The probability of `text`'s first token right after the prompt, as a row's opening is decided on it
        (`ohlora train-calibrate` measures these). Runs outside the scheduler: for tools, not for serving."""
        ids = torch.tensor([self.encode_prompt(prompt)], device=self.device)
        with self._torch_lock, torch.inference_mode(), self._adapter_context(adapter):
            logits = self.model(input_ids=ids, logits_to_keep=1).logits[0, -1]
        return opening_probability(logits, self.first_token(text))

    @contextlib.contextmanager
    def _adapters_of(self, rows: list[DecodeRow]) -> Iterator[dict[str, object]]:
        """Runs the rows' forward passes on their adapters: one for all, stacked per row, or named to peft per row.

        The decoding loop asks again when finished rows leave, so a reply left alone after its memory extraction
        runs on the bare base again.
        """
        adapters = [row.adapter for row in rows]
        if len(set(adapters)) == 1:
            with self._adapter_context(adapters[0]):
                yield {}
        elif self.stacked is not None:
            with self.stacked.rows(adapters):
                yield {}
        else:  # "__base__": peft's name for the bare base
            yield {"adapter_names": [a or "__base__" for a in adapters]}

    def _answer_trie(self, answers: tuple[str, ...]) -> AnswerTrie | None:
        """A task's answer set as token paths (None: the task has none)."""
        return self._trie(answers) if answers else None

    def _trie(self, texts: tuple[str, ...], prefixes: bool = False) -> AnswerTrie:
        """Answers (or openings) as token paths, built once per set (ohlora.llm.answers)."""
        if (texts, prefixes) not in self._answer_tries:
            self._answer_tries[texts, prefixes] = AnswerTrie(self.tokenizer, texts, prefixes)
        return self._answer_tries[texts, prefixes]

    def _adapter_context(self, adapter: str | None) -> contextlib.AbstractContextManager[object]:
        """Selects one adapter for every row; no adapter means the bare base."""
        if not self.adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    async def warm_up(self) -> None:
        """One short generation per adapter (and the base), so the first user waits for no lazy init."""
        settings = GenerationSettings(temperature=1.0, max_new_tokens=2)
        for adapter in [None, *self.adapters] if self.adapters else [None]:
            async for _ in self.for_adapter(adapter).generate("안녕", settings):
                pass


class AdapterGenerator(TaskGenerator):
    """The engine bound to one adapter: what a task's attempt loop calls."""

    def __init__(self, engine: LLMEngine, adapter: str | None, delay_seconds: float = 0.0) -> None:
        self.engine = engine
        self.adapter = adapter
        self.delay_seconds = delay_seconds  # fault injection (llm.artificial_delay_seconds)

    async def generate(
        self, prompt: str | ChatPrompt, settings: GenerationSettings, stream: bool = False
    ) -> AsyncIterator[GenerationUpdate]:
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        req = self.engine.submit(self.engine.encode_prompt(prompt), self.adapter, settings, stream)
        try:
            while True:
                update = await req.updates.get()
                if isinstance(update, Exception):
                    raise update
                yield update
                if update.done:
                    return
        finally:
            req.cancelled = True
