"""OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions` (streamed or not).

Oh-LoRA keeps her own memory and summary per user in Redis, so a request's last user message is the
turn and earlier messages are ignored. The user is the bearer token's (gateway auth on), else the
request's `user` field, else web.default_user. Parameters OpenAI accepts but Oh-LoRA cannot honour are
refused with 400 when ignoring them would change the meaning of the answer (n > 1, tools, JSON output,
log-probabilities, images, audio) and ignored otherwise (sampling and length settings, stop, seed, ...):
docs/web.md lists both.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ohlora.v1 import gateway_pb2
from ohlora.web.errors import GatewayError, bad_request
from ohlora.web.http import caller_of, first_of, read_json
from ohlora.web.page import expression_fields, gateway

CREATED = int(time.time())
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


@dataclass(frozen=True)
class CompletionRequest:
    text: str
    user: str | None
    stream: bool
    include_usage: bool


def refuse_unsupported(body: dict[str, Any]) -> None:
    """400 for what would change the answer's meaning if ignored (OpenAI answers such requests with 400 too)."""
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise bad_request("n must be 1: Oh-LoRA gives one answer per turn", "n", "unsupported_value")
    if body.get("tools") or body.get("functions"):
        raise bad_request("tools and functions are not supported: Oh-LoRA only talks", "tools", "unsupported_parameter")
    if body.get("tool_choice") not in (None, "none", "auto"):
        raise bad_request("tool_choice is not supported: Oh-LoRA has no tools", "tool_choice", "unsupported_value")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise bad_request("response_format must be {\"type\": \"text\"}: Oh-LoRA answers in plain text",
                          "response_format", "unsupported_value")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad_request("logprobs are not supported", "logprobs", "unsupported_parameter")
    if body.get("audio") is not None or any(m != "text" for m in body.get("modalities") or []):
        raise bad_request("only text output is supported", "modalities", "unsupported_value")


def message_text(content: Any, index: int) -> str:
    """A message's text: a string, or an array of text parts (other parts, e.g. images, are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"messages[{index}].content: only text parts are supported, not {kind!r}",
                                  f"messages[{index}].content", "unsupported_content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"messages[{index}].content must be a string or an array of text parts", f"messages[{index}].content")


def parse_request(body: dict[str, Any], model_name: str) -> CompletionRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model", "missing_model")
    if model != model_name:
        raise GatewayError(404, f"the model {model!r} does not exist; this server has {model_name!r}", "model_not_found", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", "messages")
    last_user = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"messages[{i}] must be an object with a role of {sorted(ROLES)}", f"messages[{i}]")
        if m["role"] == "user":
            last_user = i
    if last_user is None:
        raise bad_request("there is no user message: Oh-LoRA answers the last user message", "messages")
    text = message_text(messages[last_user].get("content"), last_user)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("user must be a string", "user")
    refuse_unsupported(body)
    return CompletionRequest(text, user or None, bool(stream), bool(options.get("include_usage")))


@dataclass
class Completion:
    """What a turn gave so far, in OpenAI's terms."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    reply: str | None = None
    usage: dict[str, int] | None = None
    expression: dict[str, float] | None = None  # the page shows it; API clients have no use for it
    warnings: list[str] = field(default_factory=list)
    turn_id: str = ""

    def take(self, event: gateway_pb2.ChatEvent) -> None:
        """Keeps what an event says about the answer; an error before the reply is raised as a GatewayError."""
        self.turn_id = self.turn_id or event.turn_id
        kind = event.WhichOneof("kind")
        if kind == "reply_final":
            self.reply = event.reply_final
        elif kind == "usage":
            p, c = event.usage.prompt_tokens, event.usage.completion_tokens
            self.usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        elif kind == "expression":
            self.expression = expression_fields(event.expression)
        elif kind == "warning":
            self.warnings.append(event.warning)
        elif kind == "error":
            error = GatewayError.from_event(event.error)
            if self.reply is None:
                raise error
            self.warnings.append(error.message)  # after the answer: she has answered; say what went wrong

    @property
    def answered(self) -> bool:
        """The reply and its token counts are in (the usage event follows reply_final at once; a gateway without
        it gives the expression next): the rest of the turn (expression, memory, summary) goes on in the gateway."""
        return self.reply is not None and (self.usage is not None or self.expression is not None)

    def extension(self) -> dict[str, Any]:
        return {"turn_id": self.turn_id, "warnings": self.warnings}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None,
              choices: bool = True) -> bytes:
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
        }
        if usage is not None or not choices:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode("utf-8")

    def whole(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "ohlora": self.extension(),
        }


async def models(request: Request) -> Response:
    """The one model. The caller's token is checked by the gateway (a cheap call), so a bad key is a 401 here too."""
    await gateway(request).call("ListTurns", gateway_pb2.ListTurnsRequest(limit=1), caller_of(request))
    name = request.app.state.settings.model_name
    return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": CREATED, "owned_by": "ohlora"}]})


async def chat_completions(request: Request) -> Response:
    settings = request.app.state.settings
    req = parse_request(await read_json(request), settings.model_name)
    events = gateway(request).chat(req.text, caller_of(request, req.user))
    completion = Completion(f"chatcmpl-{uuid.uuid4().hex[:24]}", settings.model_name)
    if not req.stream:
        try:
            async for event in events:
                completion.take(event)
                if completion.answered:
                    break
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        if completion.reply is None:
            raise GatewayError(502, "the gateway ended the turn without a reply", "no_reply")
        return JSONResponse(completion.whole())
    # Streamed: the first answer-bearing event is awaited first, so a refused turn is still an HTTP error.
    first, rest = await first_of(answer_events(events, completion))
    return StreamingResponse(sse(first, rest, completion, req.include_usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def answer_events(events: AsyncIterator[gateway_pb2.ChatEvent], completion: Completion) -> AsyncIterator[gateway_pb2.ChatEvent]:
    """The turn's events from the first delta or reply on (errors before them raise), until the reply is in."""
    try:
        async for event in events:
            completion.take(event)
            if event.WhichOneof("kind") in ("reply_delta", "reply_reset", "reply_final"):
                yield event
            if completion.answered:
                return
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def sse(first: gateway_pb2.ChatEvent | None, rest: AsyncIterator[gateway_pb2.ChatEvent], completion: Completion,
              include_usage: bool) -> AsyncIterator[bytes]:
    """Chunks as OpenAI streams them. A rejected attempt (the original's retry rules) cannot be taken back from
    a client that already shows it: after a reset the deltas are held and, at the end, what makes the streamed
    text end with the accepted reply is sent (the rest of it, or a line break and the whole reply)."""
    sent, held = "", False
    try:
        yield completion.chunk({"role": "assistant", "content": ""})
        event = first
        while event is not None:
            kind = event.WhichOneof("kind")
            if kind == "reply_delta" and not held:
                sent += event.reply_delta
                yield completion.chunk({"content": event.reply_delta})
            elif kind == "reply_reset" and sent:
                held = True
            elif kind == "reply_final" and event.reply_final != sent:
                final = event.reply_final
                missing = final[len(sent):] if final.startswith(sent) else "\n\n" + final
                sent += missing
                yield completion.chunk({"content": missing})
            event = await anext(rest, None)
        yield completion.chunk({}, finish="stop")
        if include_usage:
            yield completion.chunk({}, usage=completion.usage, choices=False)
    except GatewayError as exc:  # after the stream started: OpenAI sends an error object, then ends
        yield f"data: {json.dumps(exc.body(), ensure_ascii=False)}\n\n".encode("utf-8")
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


ROUTES = [
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]
