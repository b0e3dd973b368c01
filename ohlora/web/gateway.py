"""The web tier's side of the gateway: one gRPC channel, calls made as the caller of the HTTP request.

The web tier keeps no state: who the caller is travels with every call (the bearer token, or the
user id the gateway trusts while its auth is off), and the gateway decides. gRPC failures become
`GatewayError`s with the HTTP status and OpenAI error type an HTTP client expects (ohlora.web.errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from ohlora.chat import call_metadata
from ohlora.config import WebSettings
from ohlora.runtime import tls
from ohlora.v1 import face_pb2, gateway_pb2, gateway_pb2_grpc
from ohlora.web.errors import GatewayError


@dataclass(frozen=True)
class Caller:
    """Who an HTTP request speaks for: the user id (auth off) and the bearer token, if any (auth on)."""

    user: str
    token: str | None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return call_metadata(self.user, self.token)


class GatewayClient:
    """Async calls to the gateway; made inside the web server's event loop (grpc.aio)."""

    def __init__(self, settings: WebSettings) -> None:
        credentials = tls.channel_credentials(settings.gateway_tls_ca_file, settings.gateway_tls_cert_file,
                                              settings.gateway_tls_key_file)
        options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(settings.gateway_address, options=options)
        else:
            options += tls.name_override(settings.gateway_tls_server_name)
            self.channel = grpc.aio.secure_channel(settings.gateway_address, credentials, options=options)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.address = settings.gateway_address

    async def close(self) -> None:
        await self.channel.close()

    async def call(self, method: str, request: object, caller: Caller, timeout: float = 60.0):
        """One unary RPC; a gRPC error is raised as a GatewayError."""
        try:
            return await getattr(self.stub, method)(request, metadata=caller.metadata(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.from_status(exc.code(), exc.details() or "") from exc

    def chat(self, text: str, caller: Caller) -> AsyncIterator[gateway_pb2.ChatEvent]:
        """The turn's events as the gateway sends them. Leaving early cancels only this call: the gateway
        runs the turn as its own task, so a client that goes away loses nothing."""
        return self._stream(self.stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=caller.metadata()))

    def watch(self, caller: Caller, fps: float, size: int) -> AsyncIterator[face_pb2.Frame]:
        request = gateway_pb2.WatchRequest(fps=fps, size=size, format=face_pb2.IMAGE_FORMAT_JPEG)
        return self._stream(self.stub.Watch(request, metadata=caller.metadata()))

    @staticmethod
    async def _stream(call) -> AsyncIterator:
        """A server-streaming call's items; a gRPC error is raised as a GatewayError; closing it cancels the call."""
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.from_status(exc.code(), exc.details() or "") from exc
        finally:
            call.cancel()

    async def serving(self, timeout: float = 2.0) -> bool:
        """Whether the gateway reports SERVING (the web tier's readiness)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = await health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
