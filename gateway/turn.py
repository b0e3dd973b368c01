"""One user turn, in order (DESIGN.md §4):

validate → lock the user → log the start → 48-token guard → recall a memory (or take the
summary) → build the final input → start memory extraction → stream the reply → start the
summary → expression (critical) → gesture → wait for extraction and summary (background)
→ write them → log the outcome → unlock.

The turn runs as its own task: if the client goes away, the turn still finishes and
nothing the user said is lost. The stream stays open until the turn has settled, so the
client sees background warnings; the reply and the expression arrive before that.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from gateway.downstream import Downstream
from gateway.inputs import chat_text, has_terminal_control, model_text, strip_terminal_control
from gateway.recall import best_memory
from gateway.store import RedisStore, squash
from ohlora.config import GatewaySettings
from ohlora.errors import status_for
from ohlora.llm.final_input import build_final_input
from ohlora.llm.persona import without_address
from ohlora.v1 import common_pb2, face_pb2, gateway_pb2, llm_pb2
from services.llm_memory.task import Fact
from services.llm_pose.task import NEUTRAL, ExpressionWords, draw_weights

log = logging.getLogger(__name__)

# Memories embedded per Embed call when recall fills the vector cache. The memory service refuses more
# than its embedder.max_texts (256 by default) in one call, so while every missing vector went in one
# call, a user with more memories than that without a vector (added and imported ones get none) had no
# recall at all. Pieces this size each finish well within embed_deadline on a CPU (about 0.7 s for
# multilingual-e5-small on 2 cores), and each is saved as it comes back.
FILL_BATCH = 64


def drop(call: asyncio.Future) -> None:
    """Cancels a call whose answer is no longer wanted; if it already failed, its error is taken so that
    asyncio does not log it as never retrieved."""
    call.cancel()
    if call.done() and not call.cancelled():
        call.exception()


@dataclass
class TurnRecord:
    """What the turn log keeps about one turn."""

    status: str = "ok"
    final_input: str = ""
    memory_used: str = ""
    reply: str = ""
    expression: list[float] = field(default_factory=list)
    memory_written: str = ""
    summary: str = ""
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000, 1)


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class TurnRunner:
    def __init__(self, settings: GatewaySettings, store: RedisStore, down: Downstream) -> None:
        self.settings = settings
        self.store = store
        self.down = down
        self._running: set[asyncio.Task[None]] = set()

    def validate(self, text: str) -> str:
        """The cleaned text, or raises (empty, too long, prompt markers): see gateway.inputs."""
        return chat_text(text, self.settings.max_text_chars)

    async def run(
        self, uid: str, text: str, admit: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[gateway_pb2.ChatEvent]:
        """The turn's events. Bad input and a refused rate limit end in one error event and change no state."""
        try:
            if admit is not None:
                await admit()
            text = self.validate(text)
        except Exception as exc:
            code, message = status_for(exc)
            yield gateway_pb2.ChatEvent(error=gateway_pb2.ChatError(code=code.value[0], message=message))
            return
        queue: asyncio.Queue[gateway_pb2.ChatEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self._turn(uid, text, queue.put_nowait))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        while (event := await queue.get()) is not None:
            yield event

    async def drain(self) -> None:
        """Lets running turns finish (graceful stop)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _turn(self, uid: str, text: str, emit: Callable[[gateway_pb2.ChatEvent | None], None]) -> None:
        turn_id = uuid.uuid4().hex[:12]

        def event(**kind: object) -> None:
            emit(gateway_pb2.ChatEvent(turn_id=turn_id, **kind))

        def error(exc: BaseException) -> None:
            code, message = status_for(exc)
            event(error=gateway_pb2.ChatError(code=code.value[0], message=message))

        record = TurnRecord()
        try:
            async with self.store.user_lock(uid, self.settings.turn_wait_seconds):
                await self.store.start_turn(uid, turn_id, text)
                try:
                    await self._steps(uid, turn_id, text, record, event)
                except Exception as exc:  # every failure ends as an error event and a logged outcome
                    record.status = "error"
                    record.errors.append(describe(exc))
                    log.warning("turn failed: %s", describe(exc))
                    error(exc)
                finally:
                    await self.store.end_turn(uid, turn_id, record.__dict__)
        except Exception as exc:  # the lock or the store failed: the user hears why
            log.warning("turn not started: %s", describe(exc))
            error(exc)
        finally:
            emit(None)

    async def _steps(self, uid: str, turn_id: str, text: str, record: TurnRecord, event: Callable[..., None]) -> None:
        s, down, clock = self.settings, self.down, Stopwatch()

        def timing(stage: str, ms: float) -> None:
            record.timings_ms[stage] = ms
            event(timing=gateway_pb2.StageTiming(stage=stage, ms=ms))

        def warn(message: str) -> None:
            record.warnings.append(message)
            event(warning=message)

        text = model_text(text)
        check = await down.message.CheckInput(llm_pb2.CheckInputRequest(text=text), timeout=s.check_deadline)
        if not check.ok:
            record.status = "refused"
            event(error=gateway_pb2.ChatError(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=check.message))
            return

        memory, summary = await asyncio.gather(self.recall(uid, text, warn), self.store.summary(uid))
        record.final_input = build_final_input(memory, summary, text)
        record.memory_used = memory
        timing("recall", clock.ms())

        extraction = asyncio.create_task(self._extract(record.final_input))
        try:
            done = await self._reply(record.final_input, event, timing, clock)
        except BaseException:
            extraction.cancel()
            raise
        record.reply = strip_terminal_control(done.text)
        event(reply_final=record.reply)
        event(usage=gateway_pb2.Usage(prompt_tokens=done.stats.prompt_tokens, completion_tokens=done.stats.generated_tokens))
        summarizing = asyncio.create_task(self._summarize(record.final_input, record.reply))
        face_probe = asyncio.create_task(self._face_ok())

        weights = await self._expression(record.reply, warn)
        record.expression = list(weights)
        event(expression=common_pb2.Expression(eyes=weights[0], mouth=weights[1], pose=weights[2]))
        await self.store.publish_gesture(uid, weights)
        timing("expression", clock.ms())
        if not await face_probe:
            warn("the face service is unavailable: Oh-LoRA's face will not move for now")

        fact, summary_result = await asyncio.gather(extraction, summarizing, return_exceptions=True)
        await self._remember(uid, turn_id, fact, record, warn)
        if isinstance(summary_result, BaseException):
            warn(f"summary failed ({describe(summary_result)}); the next turn goes without one")
            summary_result = None
        record.summary = summary_result or ""
        await self.store.set_summary(uid, summary_result)
        timing("settled", clock.ms())

    async def recall(self, uid: str, text: str, warn: Callable[[str], None]) -> str:
        """The best memory for this text if its score reaches the embedder's threshold, else '' (gateway.recall).

        Only the text is embedded per turn: memory vectors are cached (in Redis, and in this process's
        memo; gateway.store), and the ones not cached yet are embedded once and saved. The memory texts
        are read while the text is being embedded, so Redis and the memory service work side by side;
        a user without memories costs no Embed call. `ohlora bench recall` times this against the
        original's re-embedding of every memory on every turn.
        """
        if not await self.store.count_memories(uid):
            return ""
        turn = without_address(text)
        embedding = asyncio.ensure_future(self.down.memory.Embed(
            llm_pb2.EmbedRequest(texts=[turn], kind="query"), timeout=self.settings.embed_deadline))
        try:
            memories = {i: t for i, t in (await self.store.memory_texts(uid)).items() if len(squash(t)) >= 3}
        except BaseException:
            drop(embedding)
            raise
        if not memories:
            drop(embedding)
            return ""
        ids = list(memories)
        try:
            query = await embedding
            vectors = await self._memory_vectors(uid, query.embedder_id, ids, memories)
        except grpc.aio.AioRpcError as exc:
            warn(f"memory recall is unavailable ({describe(exc)}); answering without memories")
            return ""
        q = np.array(query.embeddings[0].values, dtype=np.float32)
        return best_memory(q, [memories[i] for i in ids], vectors, query.threshold, turn, query.lexical_weight)

    async def _memory_vectors(self, uid: str, embedder: str, ids: list[str], memories: dict[str, str]) -> np.ndarray:
        """One row per id: the cached vector, or (the one-time fill) embedded now FILL_BATCH texts a call,
        each batch saved as soon as it is back."""
        cached = await self.store.vectors_for(uid, embedder, ids)
        missing = [i for i, v in zip(ids, cached) if v is None]
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), FILL_BATCH):
            batch = missing[start:start + FILL_BATCH]
            embedded = await self.down.memory.Embed(
                llm_pb2.EmbedRequest(texts=[memories[i] for i in batch], kind="passage"), timeout=self.settings.embed_deadline
            )
            new = {i: np.array(e.values, dtype=np.float32) for i, e in zip(batch, embedded.embeddings)}
            await self.store.save_vectors(uid, embedder, new)
            fresh.update(new)
        return np.array([v if v is not None else fresh[i] for i, v in zip(ids, cached)])  # np.stack: twice as long

    async def _extract(self, final_input: str) -> Fact | None:
        response = await self.down.memory.Extract(
            llm_pb2.ExtractRequest(final_input=final_input), timeout=self.settings.extract_deadline
        )
        if not response.HasField("fact"):
            return None
        return Fact(response.fact.key, response.fact.value, response.fact.text)

    async def _reply(self, final_input: str, event: Callable[..., None], timing: Callable[[str, float], None],
                     clock: Stopwatch) -> llm_pb2.ReplyDone:
        first = True
        async for chunk in self.down.message.Reply(llm_pb2.ReplyRequest(final_input=final_input), timeout=self.settings.reply_deadline):
            kind = chunk.WhichOneof("kind")
            if first:
                timing("first_chunk", clock.ms())
                first = False
            if kind == "delta":  # model text never carries terminal control to the client (gateway.inputs)
                event(reply_delta=strip_terminal_control(chunk.delta))
            elif kind == "reset":
                event(reply_reset=chunk.reset)
            elif kind == "done":
                timing("reply", clock.ms())
                return chunk.done
        raise RuntimeError("the message service ended the reply without a final chunk")

    async def _summarize(self, final_input: str, reply: str) -> str | None:
        response = await self.down.summary.Summarize(
            llm_pb2.SummarizeRequest(final_input=final_input, reply=reply), timeout=self.settings.summary_deadline
        )
        return strip_terminal_control(response.summary) if response.HasField("summary") else None

    async def _expression(self, reply: str, warn: Callable[[str], None]) -> tuple[float, float, float]:
        try:
            response = await self.down.pose.DecideExpression(llm_pb2.PoseRequest(reply=reply), timeout=self.settings.pose_deadline)
        except grpc.aio.AioRpcError as exc:
            warn(f"the expression service failed ({describe(exc)}); showing a neutral face")
            return draw_weights(ExpressionWords(*NEUTRAL))
        e = response.expression
        return (e.eyes, e.mouth, e.pose)

    async def _face_ok(self) -> bool:
        try:
            await self.down.face.ListFaces(face_pb2.ListFacesRequest(), timeout=2.0)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def _remember(self, uid: str, turn_id: str, fact: object, record: TurnRecord, warn: Callable[[str], None]) -> None:
        """Stores an extracted fact; a new value for a key she already knows replaces the old one."""
        if isinstance(fact, BaseException):
            warn(f"memory extraction failed ({describe(fact)}); nothing new was remembered")
            return
        if not isinstance(fact, Fact):
            return
        if has_terminal_control(fact.text):
            warn("the extracted memory held control characters and was not remembered")
            return
        vector, embedder = None, ""
        try:
            embedded = await self.down.memory.Embed(llm_pb2.EmbedRequest(texts=[fact.text], kind="passage"), timeout=self.settings.embed_deadline)
            vector, embedder = np.array(embedded.embeddings[0].values, dtype=np.float32), embedded.embedder_id
        except grpc.aio.AioRpcError as exc:
            log.info("memory stored without a cached vector: %s", describe(exc))
        if await self.store.count_memories(uid) >= self.settings.max_memories:
            warn(f"Oh-LoRA's memory of you is full ({self.settings.max_memories}); {fact.text} was not remembered")
            return
        added, _replaced = await self.store.add_memory(uid, fact, "extracted", turn_id, True, vector, embedder)
        record.memory_written = added.text if added else ""
