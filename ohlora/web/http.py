"""Request and response helpers shared by the page's API and the OpenAI-compatible API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from starlette.requests import Request

from gateway.auth import USER_ID
from ohlora.web.errors import GatewayError, bad_request
from ohlora.web.gateway import Caller

T = TypeVar("T")
USER_HEADER = "x-ohlora-user"  # the page's user while the gateway's auth is off (gateway/auth.py USER_KEY)


def caller_of(request: Request, user: object = None) -> Caller:
    """The bearer token of the request, if any, and the user it names: `user` (the OpenAI `user` field), else
    the X-Ohlora-User header, else the configured default. With the gateway's auth on, the token's user counts
    and the name is ignored there."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""  # an empty key (clients of an auth-off server) is none
    name = user if user is not None else request.headers.get(USER_HEADER) or request.app.state.settings.default_user
    if not isinstance(name, str) or not USER_ID.match(name):
        raise bad_request("user must be 1-64 letters, digits or . _ - @", "user", "invalid_user")
    return Caller(name, token or None)


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past web.max_body_bytes (before reading it when the length is declared)."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"the request body is {declared} bytes; the limit is {limit} bytes", "too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise GatewayError(413, f"the request body is over the limit of {limit} bytes", "too_large")
    return bytes(body)


async def read_json(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(value, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return value


async def read_text(request: Request) -> str:
    try:
        return (await read_body(request)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request("the file is not UTF-8 text", code="invalid_encoding") from exc


def json_line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")


async def first_of(stream: AsyncIterator[T]) -> tuple[T | None, AsyncIterator[T]]:
    """Reads the stream's first item before a streamed response starts, so that a refusal (no token, bad
    request) still becomes an HTTP error status; returns it and the rest. The stream is closed on an error."""
    iterator = aiter(stream)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        return None, iterator
    except BaseException:
        await iterator.aclose()  # type: ignore[attr-defined]
        raise
    return first, iterator
