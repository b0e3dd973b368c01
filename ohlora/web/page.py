"""The page's API (`/api/...`): a turn as a stream of JSON lines, the live face, faces, memories, session.

Each route is one gateway call made as the request's caller (ohlora.web.http.caller_of); the page is
static (ohlora/web/static) and inserts model text only as text.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ohlora.v1 import gateway_pb2
from ohlora.web.errors import GatewayError, bad_request
from ohlora.web.gateway import Caller, GatewayClient
from ohlora.web.http import caller_of, first_of, json_line, read_json, read_text

NDJSON = "application/x-ndjson"
MEMORY_FILE_NAME = "ohlora_memory.txt"  # what `ohlora memory export > ohlora_memory.txt` writes (README)


def gateway(request: Request) -> GatewayClient:
    return request.app.state.gateway


def expression_fields(expression: Any) -> dict[str, float]:
    return {"eyes": round(expression.eyes, 4), "mouth": round(expression.mouth, 4), "pose": round(expression.pose, 4)}


def error_fields(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "status": error.status, "code": error.code, "message": error.message}


def page_event(event: gateway_pb2.ChatEvent) -> dict[str, Any] | None:
    """One gateway event as the page reads it; None for what the page does not show (stage timings)."""
    kind = event.WhichOneof("kind")
    if kind == "reply_delta":
        return {"type": "delta", "text": event.reply_delta}
    if kind == "reply_reset":
        return {"type": "reset"}
    if kind == "reply_final":
        return {"type": "final", "text": event.reply_final, "turn_id": event.turn_id}
    if kind == "expression":
        return {"type": "expression", **expression_fields(event.expression)}
    if kind == "warning":
        return {"type": "warning", "message": event.warning}
    if kind == "error":
        return error_fields(GatewayError.from_event(event.error))
    return None


async def turn_lines(client: GatewayClient, text: str, caller: Caller) -> AsyncIterator[bytes]:
    """The turn as JSON lines until it has settled (late warnings included), then {"type": "settled"}. The
    page takes its input back at "expression"; a browser that goes away cancels only this stream."""
    try:
        async for event in client.chat(text, caller):
            shown = page_event(event)
            if shown is not None:
                yield json_line(shown)
    except GatewayError as exc:
        yield json_line(error_fields(exc))
    yield json_line({"type": "settled"})


async def chat(request: Request) -> Response:
    body = await read_json(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise bad_request("text must be a string: what you say to Oh-LoRA", "text")
    return StreamingResponse(turn_lines(gateway(request), text, caller_of(request)), media_type=NDJSON)


async def face(request: Request) -> Response:
    """The live face as JSON lines of base64 JPEG frames with their expression (the gateway's Watch)."""
    settings = request.app.state.settings
    stopping = request.app.state.stopping
    frames = gateway(request).watch(caller_of(request), settings.face_fps, settings.face_size)
    first, rest = await first_of(frames)

    async def lines() -> AsyncIterator[bytes]:
        frame = first
        try:
            while frame is not None and not stopping():
                yield json_line({"image": base64.b64encode(frame.image).decode("ascii"), "index": frame.index,
                                 **expression_fields(frame.expression)})
                frame = await anext(rest, None)
        except GatewayError as exc:
            yield json_line(error_fields(exc))
        finally:
            await rest.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(lines(), media_type=NDJSON, headers={"Cache-Control": "no-store"})


async def faces(request: Request) -> Response:
    listed = await gateway(request).call("Faces", gateway_pb2.FacesRequest(size=96), caller_of(request))
    return JSONResponse({
        "faces": [{"id": f.face_id, "description": f.description, "image": base64.b64encode(f.image).decode("ascii")}
                  for f in listed.faces],
        "chosen": listed.chosen if listed.HasField("chosen") else None,
    })


async def choose_face(request: Request) -> Response:
    body = await read_json(request)
    chosen = body.get("face")
    if chosen is not None and (not isinstance(chosen, int) or isinstance(chosen, bool)):
        raise bad_request("face must be a face number, or null for a random one", "face")
    message = gateway_pb2.ChooseFaceRequest(face_id=chosen) if chosen is not None else gateway_pb2.ChooseFaceRequest()
    reply = await gateway(request).call("ChooseFace", message, caller_of(request))
    return JSONResponse({"face": reply.face_id, "random": reply.random})


def memory_fields(m: gateway_pb2.Memory) -> dict[str, Any]:
    return {"id": m.id, "key": m.key, "value": m.value, "text": m.text, "created": m.created, "turn_id": m.turn_id}


async def memories(request: Request) -> Response:
    listed = await gateway(request).call("ListMemories", gateway_pb2.ListMemoriesRequest(), caller_of(request))
    return JSONResponse({"memories": [memory_fields(m) for m in listed.memories]})


async def add_memory(request: Request) -> Response:
    body = await read_json(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise bad_request("text must be a string written as [key: value]", "text")
    added = await gateway(request).call("AddMemory", gateway_pb2.AddMemoryRequest(text=text), caller_of(request))
    return JSONResponse(memory_fields(added), status_code=201)


async def forget_memory(request: Request) -> Response:
    memory_id = request.path_params["memory_id"]
    gone = await gateway(request).call("ForgetMemory", gateway_pb2.ForgetMemoryRequest(id=memory_id), caller_of(request))
    if not gone.forgotten:
        raise GatewayError(404, f"no memory with id {memory_id}", "memory_not_found")
    return JSONResponse({"forgotten": True})


async def import_memories(request: Request) -> Response:
    """A memory file in the original's format as the request body (text/plain, UTF-8)."""
    content = await read_text(request)
    caller = caller_of(request)
    done = await gateway(request).call("ImportMemories", gateway_pb2.ImportMemoriesRequest(content=content), caller)
    return JSONResponse({"added": done.added, "skipped": done.skipped})


async def export_memories(request: Request) -> Response:
    done = await gateway(request).call("ExportMemories", gateway_pb2.ExportMemoriesRequest(), caller_of(request))
    return Response(done.content, media_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{MEMORY_FILE_NAME}"'})


async def reset_summary(request: Request) -> Response:
    await gateway(request).call("ResetSummary", gateway_pb2.ResetSummaryRequest(), caller_of(request))
    return JSONResponse({"reset": True})


ROUTES = [
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/face", face, methods=["GET"]),
    Route("/api/faces", faces, methods=["GET"]),
    Route("/api/faces/choice", choose_face, methods=["POST"]),
    Route("/api/memories", memories, methods=["GET"]),
    Route("/api/memories", add_memory, methods=["POST"]),
    Route("/api/memories/import", import_memories, methods=["POST"]),
    Route("/api/memories/export", export_memories, methods=["GET"]),
    Route("/api/memories/{memory_id}", forget_memory, methods=["DELETE"]),
    Route("/api/summary/reset", reset_summary, methods=["POST"]),
]
