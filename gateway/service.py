"""The public Gateway service: chat turns, face frames, memories and sessions, per user."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from gateway import inputs
from gateway.animation import BASE, Animator
from gateway.auth import Authenticator, TokenStore
from gateway.downstream import Downstream
from gateway.limits import Bucket, RateLimiter
from gateway.memory_file import format_memory_file
from gateway.store import RedisStore
from gateway.turn import TurnRunner
from ohlora.config import GatewaySettings
from ohlora.errors import AlreadyExists, InvalidInput, LimitExceeded, NotReady
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import common_pb2, face_pb2, gateway_pb2, gateway_pb2_grpc

log = logging.getLogger(__name__)
SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
SERVICE_NAME = SERVICE.full_name
MAX_ID_CHARS = 64
THUMBNAIL_SIZE = 128  # FacesRequest.size 0
MAX_THUMBNAILS = 512  # cached pictures (faces x sizes) before the cache starts over


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
        self.auth = Authenticator(settings.auth, TokenStore(store.redis, store.keys))
        self._thumbnails: dict[tuple[int, int], bytes] = {}  # (face, size) -> JPEG: a face at rest never changes
        self.limits = RateLimiter(store.redis, store.keys, [
            Bucket("turn", settings.turns_per_minute, settings.turn_burst, "chat turns"),
            Bucket("call", settings.calls_per_minute, settings.call_burst, "requests"),
        ])

    async def caller(self, context: grpc.aio.ServicerContext) -> str:
        """The authenticated user of a non-chat call, after their per-user request limit."""
        uid = await self.auth.user(context)
        await self.limits.take(uid, "call")
        return uid

    # ------------------------------------------------------------------ chat
    async def Chat(self, request: gateway_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.ChatEvent]:
        uid = await self.auth.user(context)
        async for event in self.turns.run(uid, request.text, admit=lambda: self.limits.take(uid, "turn")):
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

    async def Faces(self, request: gateway_pb2.FacesRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.FacesResponse:
        """Every face at rest, small, for a chooser (the contact sheet of `ohlora faces`), and the user's choice."""
        uid = await self.caller(context)
        size = request.size or THUMBNAIL_SIZE
        listed = await self.down.face.ListFaces(face_pb2.ListFacesRequest(), timeout=self.settings.face_deadline)
        images = await asyncio.gather(*(self._thumbnail(f.face_id, size) for f in listed.faces))
        chosen = await self.store.face(uid)
        return gateway_pb2.FacesResponse(
            faces=[gateway_pb2.FaceThumbnail(face_id=f.face_id, description=f.description, image=image)
                   for f, image in zip(listed.faces, images)],
            chosen=chosen,
        )

    async def _thumbnail(self, face: int, size: int) -> bytes:
        key = (face, size)
        if key not in self._thumbnails:
            render = face_pb2.RenderRequest(face_id=face, format=face_pb2.IMAGE_FORMAT_JPEG, size=size,
                                            expressions=[common_pb2.Expression(eyes=BASE[0], mouth=BASE[1], pose=BASE[2])])
            frames = [f async for f in self.down.face.Render(render, timeout=self.settings.face_deadline)]
            if len(self._thumbnails) >= MAX_THUMBNAILS:
                self._thumbnails.clear()
            self._thumbnails[key] = frames[0].image
        return self._thumbnails[key]

    async def ChooseFace(self, request: gateway_pb2.ChooseFaceRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.ChooseFaceResponse:
        """Like the original's -ohlora_no: a known face is taken; none or an unknown one is picked at random."""
        uid = await self.caller(context)
        faces = await self._faces()
        if request.HasField("face_id") and request.face_id in faces:
            chosen, randomly = request.face_id, False
        else:
            chosen, randomly = random.choice(faces), True
        await self.store.set_face(uid, chosen)
        return gateway_pb2.ChooseFaceResponse(face_id=chosen, random=randomly)

    async def Watch(self, request: gateway_pb2.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[face_pb2.Frame]:
        uid = await self.caller(context)
        fps = request.fps or self.settings.default_fps
        if not 0 < fps <= self.settings.max_fps:
            raise InvalidInput(f"fps {fps} must be above 0 and at most {self.settings.max_fps}")
        size = request.size
        fmt = request.format or face_pb2.IMAGE_FORMAT_JPEG
        animator = Animator(started=time.monotonic())
        listener = asyncio.create_task(self._listen(uid, animator))
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
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        raise  # a bad size or format: retrying cannot help, the caller hears why
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

    async def _listen(self, uid: str, animator: Animator) -> None:
        """Feeds the user's gestures (Redis pub/sub, from a turn on any replica) to this stream's animator.

        A subscription does not survive a Redis restart, so a lost one is made again (tests/test_faults.py)."""
        while True:
            try:
                async with self.store.gesture_events(uid) as events:
                    while True:
                        message = await events.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            target = json.loads(message["data"])["gesture"]
                            animator.answer(tuple(target), time.monotonic())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: the face keeps idling; subscribe again when it is back
                log.warning("gesture subscription lost (%s); subscribing again", exc)
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ memories
    async def ListMemories(self, request, context) -> gateway_pb2.ListMemoriesResponse:
        records = await self.store.list_memories(await self.caller(context))
        return gateway_pb2.ListMemoriesResponse(memories=[memory_message(r) for r in records])

    async def _room_for(self, uid: str, more: int) -> None:
        held = await self.store.count_memories(uid)
        if held + more > self.settings.max_memories:
            raise LimitExceeded(
                f"Oh-LoRA holds {held} memories of you and the limit is {self.settings.max_memories}; "
                "forget some first (ListMemories / `ohlora memory forget`)"
            )

    async def AddMemory(self, request: gateway_pb2.AddMemoryRequest, context) -> gateway_pb2.Memory:
        uid = await self.caller(context)
        fact = inputs.memory_fact(request.text, self.settings.max_memory_chars)
        await self._room_for(uid, 1)
        record, _ = await self.store.add_memory(uid, fact, "added")
        if record is None:
            raise AlreadyExists(f"Oh-LoRA already remembers {fact.text}")
        return memory_message(record)

    async def ForgetMemory(self, request: gateway_pb2.ForgetMemoryRequest, context) -> gateway_pb2.ForgetMemoryResponse:
        uid = await self.caller(context)
        if not request.id or len(request.id) > MAX_ID_CHARS:
            raise InvalidInput("id is empty or too long; ListMemories gives the ids")
        return gateway_pb2.ForgetMemoryResponse(forgotten=await self.store.forget(uid, request.id))

    async def ImportMemories(self, request: gateway_pb2.ImportMemoriesRequest, context) -> gateway_pb2.ImportMemoriesResponse:
        uid = await self.caller(context)
        size = len(request.content.encode("utf-8", "surrogatepass"))
        if size > self.settings.max_import_bytes:
            raise LimitExceeded(f"the memory file is {size} bytes; the limit is {self.settings.max_import_bytes} bytes")
        facts, bad = inputs.memory_file_facts(request.content, self.settings.max_memory_chars)
        await self._room_for(uid, len(facts))
        added = 0
        for fact in facts:
            record, _ = await self.store.add_memory(uid, fact, "imported")
            added += record is not None
        return gateway_pb2.ImportMemoriesResponse(added=added, skipped=len(facts) - added + bad)

    async def ExportMemories(self, request, context) -> gateway_pb2.ExportMemoriesResponse:
        records = await self.store.list_memories(await self.caller(context))
        return gateway_pb2.ExportMemoriesResponse(content=format_memory_file([r.text for r in records]))

    # ------------------------------------------------------------------ session
    async def ResetSummary(self, request, context) -> gateway_pb2.ResetSummaryResponse:
        await self.store.set_summary(await self.caller(context), None)
        return gateway_pb2.ResetSummaryResponse()

    async def ListTurns(self, request: gateway_pb2.ListTurnsRequest, context) -> gateway_pb2.ListTurnsResponse:
        uid = await self.caller(context)
        limit = request.limit or 20
        if limit > 1000:
            raise InvalidInput("limit must be at most 1000")
        turns = []
        for t in await self.store.turns(uid, limit):
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
        return ServiceBinding(SERVICE_NAME, lambda server: register_gateway(_Delegate(self), server))


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes are not a valid message (e.g. a string field that is not UTF-8)."""

    type_name: str
    reason: str


def _lenient(message_class: Any) -> Callable[[bytes], Any]:
    """Deserializer that hands undecodable bytes to the servicer (INVALID_ARGUMENT with a reason)
    instead of failing inside gRPC, which would answer a bare INTERNAL."""
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(message_class.DESCRIPTOR.name, str(exc))
    return parse


def register_gateway(servicer: gateway_pb2_grpc.GatewayServicer, server: grpc.aio.Server) -> None:
    """Like the generated add_GatewayServicer_to_server, with lenient request deserializers."""
    handlers = {}
    for method in SERVICE.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=_lenient(request_class),
                                     response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _checked(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise InvalidInput(f"the {request.type_name} could not be decoded (text fields must be valid UTF-8): {request.reason}")
    return request


def _delegate(name: str) -> Callable[..., Any]:
    """Forwards one RPC to the servicer that load() creates (UNAVAILABLE until then)."""
    method = getattr(GatewayServicer, name)
    if name in ("Chat", "Watch"):
        async def stream(self: "_Delegate", request, context):
            async for item in method(self.host.ready(), _checked(request), context):
                yield item
        return stream

    async def unary(self: "_Delegate", request, context):
        return await method(self.host.ready(), _checked(request), context)
    return unary


class _Delegate(gateway_pb2_grpc.GatewayServicer):
    """What is registered on the server: it exists before Redis and the channels do (they must be made
    inside the running event loop), and hands every call to the host's servicer once it is ready."""

    def __init__(self, host: GatewayHost) -> None:
        self.host = host


for _name in SERVICE.methods_by_name:
    setattr(_Delegate, _name, _delegate(_name))
