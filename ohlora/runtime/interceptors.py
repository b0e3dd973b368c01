"""One server interceptor for every service: request ids, logs, metrics, error → status.

Servicers raise `OhloraError` subclasses; this interceptor aborts the call with the status
`ohlora.errors.status_for` picks (the gateway's turn uses the same function for its error
events), so a servicer method is just "request in, reply out".
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ohlora.errors import status_for
from ohlora.runtime import metrics
from ohlora.runtime.logging import request_id

log = logging.getLogger("ohlora.rpc")
REQUEST_ID_KEY = "x-request-id"


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            return str(value)
    return uuid.uuid4().hex[:16]


class _Call:
    """Bookkeeping of one RPC: id, timing, outcome."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.rid = _request_id(context)
        self.token = request_id.set(self.rid)
        self.started = time.perf_counter()
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.rid),))

    async def fail(self, exc: BaseException) -> None:
        code, message = status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("unhandled error in %s", self.method)
        self.finish(code)
        await self.context.abort(code, message)

    def finish(self, code: grpc.StatusCode | None = None) -> None:
        code = code or self.context.code() or grpc.StatusCode.OK
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.OK
        elapsed = time.perf_counter() - self.started
        metrics.RPC_REQUESTS.labels(self.method, code.name).inc()
        metrics.RPC_LATENCY.labels(self.method).observe(elapsed)
        log.info("rpc", extra={"fields": {"method": self.method, "code": code.name, "ms": round(elapsed * 1000, 1)}})
        request_id.reset(self.token)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc."):
            return handler
        method = details.method
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(method, context)
                try:
                    response = await inner_uu(request, context)
                except (grpc.aio.AbortError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        call.finish()
                        raise
                    await call.fail(exc)
                call.finish()
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                call = _Call(method, context)
                try:
                    async for item in inner_us(request, context):
                        yield item
                except (grpc.aio.AbortError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        call.finish()
                        raise
                    await call.fail(exc)
                call.finish()

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
