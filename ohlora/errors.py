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
