"""Exceptions that carry a gRPC status code.

Servicers and the engine raise these; one interceptor (ohlora.runtime.interceptors)
turns them into the status the client sees, so no servicer needs try/except.
"""

from __future__ import annotations

import grpc


class OhloraError(Exception):
    """Base class: an error whose message is meant for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(OhloraError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class QueueFull(OhloraError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(OhloraError):
    code = grpc.StatusCode.UNAVAILABLE


class ConfigError(Exception):
    """Bad or missing configuration, reported before a server starts."""


class AlreadyExists(OhloraError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(OhloraError):
    """No bearer token, or one that is unknown or revoked (gateway with auth on)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class LimitExceeded(OhloraError):
    """A per-user rate limit or a size limit: the message says which limit and when to retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and the caller-facing message for any exception, decided in one place.

    Our own errors carry their code; a downstream service's status passes through; an
    unreachable Redis is UNAVAILABLE; anything else is INTERNAL.
    """
    if isinstance(exc, OhloraError):
        return exc.code, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), f"a downstream service failed ({exc.code().name}): {exc.details()}"
    if type(exc).__module__.startswith("redis"):
        return grpc.StatusCode.UNAVAILABLE, f"the memory store (Redis) is unreachable: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
