"""HTTP errors of the web tier, with bodies shaped like the OpenAI API's, decided in one place.

`{"error": {"message", "type", "param", "code"}}` with the status OpenAI uses for the same trouble:
400 bad request, 401 no or bad token, 404 unknown model or route, 413 too large, 429 rate limit
(with Retry-After), 503 the gateway or a model service is unavailable or overloaded, 504 a deadline,
500 anything else. A gRPC status from the gateway maps onto these; no traceback ever reaches a client.
"""

from __future__ import annotations

import math

import grpc
from starlette.responses import JSONResponse

from gateway.limits import RATE_LIMIT_PREFIX, retry_after

# A gateway message that starts so reports a model service's status passed through (ohlora.errors.status_for).
DOWNSTREAM_PREFIX = "a downstream service failed"

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
          503: "service_unavailable_error", 504: "timeout_error"}
_STATUS_OF_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 503,
}
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


class GatewayError(Exception):
    """An error an HTTP client gets: status, OpenAI error type and code, a message a person can act on."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "server_error")

    @classmethod
    def from_status(cls, code: grpc.StatusCode, message: str) -> "GatewayError":
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            if message.startswith(RATE_LIMIT_PREFIX):
                return cls(429, message, "rate_limit_exceeded", retry_after_s=retry_after(message))
            if message.startswith(DOWNSTREAM_PREFIX):  # a model service's queue is full: overloaded, try later
                return cls(503, message, "overloaded")
            return cls(413, message, "too_large")  # the gateway's size limits: message, memory, file, memory count
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return cls(401, message, "invalid_api_key")
        return cls(_STATUS_OF_CODE.get(code, 500), message, code.name.lower())

    @classmethod
    def from_event(cls, error: object) -> "GatewayError":
        """From a ChatEvent's error (a google.rpc.Code number and a message)."""
        code = _CODES_BY_VALUE.get(getattr(error, "code"), grpc.StatusCode.UNKNOWN)
        return cls.from_status(code, getattr(error, "message"))

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, code, param)
