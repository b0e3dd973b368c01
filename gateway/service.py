"""The public Gateway service: chat turns, face frames, memories and sessions, per user."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from gateway.animation import Animator
from gateway.downstream import Downstream
from gateway.memory_file import format_memory_file, parse_line, parse_memory_file
from gateway.store import RedisStore
from gateway.turn import TurnRunner
from ohlora.config import GatewaySettings
from ohlora.errors import AlreadyExists, InvalidInput, NotReady
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import common_pb2, face_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
USER_KEY = "x-ohlora-user"
USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
DEFAULT_USER = "local"
MAX_IMPORT_BYTES = 256 * 1024


def user_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's user id (from x-ohlora-user while auth is off)."""
    for key, value in context.invocation_metadata() or ():
        if key == USER_KEY:
            if not USER_ID.match(str(value)):
                raise InvalidInput(f"user id {value!r} must be 1-64 letters, digits or . _ - @")
            return str(value)
    return DEFAULT_USER


def memory_message(record) -> gateway_pb2.Memory:
    return gateway_pb2.Memory(
        id=record.id, key=record.key, value=record.value, text=record.text, created=record.created, turn_id=record.turn
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, settings: GatewaySettings, store: RedisStore, down: Downstream) -> None:
        self.settings = settings
        self.store = store
        self.down = down
        self.turns = TurnRunner(settings, store, down)



    # ------------------------------------------------------------------ chat
    async def Chat(self, request: gateway_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.ChatEvent]:
        uid = user_of(context)
        async for event in self.turns.run(uid, request.text):
            yield event

    # ------------------------------------------------------------------ face
    async def _faces(self) -> list[int]:
        listed = await self.down.face.ListFaces(face_pb2.ListFacesRequest(), timeout=self.settings.face_deadline)
        return [f.face_id for f in listed.faces]

    async def _face_of(self, uid: str) -> int:
        face = await self.store.face(uid)
        if face is None:
            face = random.choice(await self._faces())
            await self.store.set_face(uid, face)
        return face

    async def ChooseFace(self, request: gateway_pb2.ChooseFaceRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.ChooseFaceResponse:
        """Like the original's -ohlora_no: a known face is taken; none or an unknown one is picked at random."""
        uid = user_of(context)
        faces = await self._faces()
        if request.HasField("face_id") and request.face_id in faces:
            chosen, randomly = request.face_id, False
        else:
            chosen, randomly = random.choice(faces), True
        await self.store.set_face(uid, chosen)
        return gateway_pb2.ChooseFaceResponse(face_id=chosen, random=randomly)

    async def Watch(self, request: gateway_pb2.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[face_pb2.Frame]:
        uid = user_of(context)
        fps = request.fps or self.settings.default_fps
        if not 0 < fps <= self.settings.max_fps:
            raise InvalidInput(f"fps {fps} must be above 0 and at most {self.settings.max_fps}")
        size = request.size
        fmt = request.format or face_pb2.IMAGE_FORMAT_JPEG
        animator = Animator(started=time.monotonic())
        async with self.store.gesture_events(uid) as events:
            listener = asyncio.create_task(self._listen(events, animator))
            try:
                next_at = time.monotonic()
                while True:
                    face = await self._face_of(uid)
                    count = self.settings.frames_per_batch
                    weights = [animator.next_frame(next_at + i / fps) for i in range(count)]
                    render = face_pb2.RenderRequest(
                        face_id=face, format=fmt, size=size,
                        expressions=[common_pb2.Expression(eyes=e, mouth=m, pose=p) for e, m, p in weights],
                    )
                    try:
                        frames = [f async for f in self.down.face.Render(render, timeout=self.settings.face_deadline)]
                    except grpc.aio.AioRpcError as exc:
                        log.warning("face render failed: %s", exc.details())
                        await asyncio.sleep(1.0)
                        next_at = time.monotonic()
                        continue
                    for frame in frames:
                        delay = next_at - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        yield frame
                        next_at = max(next_at + 1 / fps, time.monotonic() - 1.0)
            finally:
                listener.cancel()

    @staticmethod
    async def _listen(events, animator: Animator) -> None:
        async for message in events.listen():
            if message.get("type") == "message":
                target = json.loads(message["data"])["gesture"]
                animator.answer(tuple(target), time.monotonic())

    # ------------------------------------------------------------------ memories
    async def ListMemories(self, request, context) -> gateway_pb2.ListMemoriesResponse:
        records = await self.store.list_memories(user_of(context))
        return gateway_pb2.ListMemoriesResponse(memories=[memory_message(r) for r in records])

    async def AddMemory(self, request: gateway_pb2.AddMemoryRequest, context) -> gateway_pb2.Memory:
        fact = parse_line(request.text)
        if fact is None:
            raise InvalidInput(f"{request.text!r} is not a memory; write it as [key: value]")
        record, _ = await self.store.add_memory(user_of(context), fact, "added")
        if record is None:
            raise AlreadyExists(f"Oh-LoRA already remembers {fact.text}")
        return memory_message(record)

    async def ForgetMemory(self, request: gateway_pb2.ForgetMemoryRequest, context) -> gateway_pb2.ForgetMemoryResponse:
        if not request.id:
            raise InvalidInput("id is empty; ListMemories gives the ids")
        return gateway_pb2.ForgetMemoryResponse(forgotten=await self.store.forget(user_of(context), request.id))

    async def ImportMemories(self, request: gateway_pb2.ImportMemoriesRequest, context) -> gateway_pb2.ImportMemoriesResponse:
        if len(request.content.encode()) > MAX_IMPORT_BYTES:
            raise InvalidInput(f"the memory file is over {MAX_IMPORT_BYTES // 1024} KiB")
        uid = user_of(context)
        facts, bad = parse_memory_file(request.content)
        added = 0
        for fact in facts:
            record, _ = await self.store.add_memory(uid, fact, "imported")
            added += record is not None
        return gateway_pb2.ImportMemoriesResponse(added=added, skipped=len(facts) - added + len(bad))

    async def ExportMemories(self, request, context) -> gateway_pb2.ExportMemoriesResponse:
        records = await self.store.list_memories(user_of(context))
        return gateway_pb2.ExportMemoriesResponse(content=format_memory_file([r.text for r in records]))

    # ------------------------------------------------------------------ session
    async def ResetSummary(self, request, context) -> gateway_pb2.ResetSummaryResponse:
        await self.store.set_summary(user_of(context), None)
        return gateway_pb2.ResetSummaryResponse()

    async def ListTurns(self, request: gateway_pb2.ListTurnsRequest, context) -> gateway_pb2.ListTurnsResponse:
        limit = request.limit or 20
        if limit > 1000:
            raise InvalidInput("limit must be at most 1000")
        turns = []
        for t in await self.store.turns(user_of(context), limit):
            expression = t.get("expression") or []
            turns.append(gateway_pb2.Turn(
                turn_id=t["turn_id"], user_text=t.get("user_text", ""), final_input=t.get("final_input", ""),
                reply=t.get("reply", ""), status=t.get("status", ""), memory_written=t.get("memory_written", ""),
                summary=t.get("summary", ""), errors=t.get("errors", []) + t.get("warnings", []),
                started=t.get("started", 0.0), ended=t.get("ended", 0.0),
                expression=common_pb2.Expression(eyes=expression[0], mouth=expression[1], pose=expression[2])
                if len(expression) == 3 else None,
            ))
        return gateway_pb2.ListTurnsResponse(turns=turns)


class GatewayHost:
    """Connects Redis and the downstream channels once the event loop runs, then serves through them."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.servicer: GatewayServicer | None = None

    async def load(self) -> None:
        store = RedisStore.connect(self.settings.redis_url, self.settings.key_prefix, self.settings.turn_log_length)
        await store.check_schema()
        self.servicer = GatewayServicer(self.settings, store, Downstream(self.settings))

    async def close(self) -> None:
        if self.servicer is not None:
            await self.servicer.turns.drain()
            await self.servicer.down.close()
            await self.servicer.store.close()

    def ready(self) -> GatewayServicer:
        if self.servicer is None:
            raise NotReady("the gateway is still connecting to Redis; retry when health reports SERVING")
        return self.servicer

    def binding(self) -> ServiceBinding:
        return ServiceBinding(SERVICE_NAME, lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(_Delegate(self), server))


def _delegate(name: str) -> Callable[..., Any]:
    """Forwards one RPC to the servicer that load() creates (UNAVAILABLE until then)."""
    method = getattr(GatewayServicer, name)
    if name in ("Chat", "Watch"):
        async def stream(self: "_Delegate", request, context):
            async for item in method(self.host.ready(), request, context):
                yield item
        return stream

    async def unary(self: "_Delegate", request, context):
        return await method(self.host.ready(), request, context)
    return unary


class _Delegate(gateway_pb2_grpc.GatewayServicer):
    """What is registered on the server: it exists before Redis and the channels do (they must be made
    inside the running event loop), and hands every call to the host's servicer once it is ready."""

    def __init__(self, host: GatewayHost) -> None:
        self.host = host


for _name in gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name:
    setattr(_Delegate, _name, _delegate(_name))
