"""`ohlora serve web`: the page at `/`, its API under `/api`, the OpenAI-compatible API under `/v1`.

The web tier is a client of the gateway, like `ohlora chat`: it holds one gRPC channel and nothing
else, so the gateway stays the only stateful part and the web tier scales on its own (docs/web.md).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ohlora.config import Settings, WebSettings
from ohlora.web import openai_api, page
from ohlora.web.errors import GatewayError
from ohlora.web.gateway import GatewayClient

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
WEB_PORT = 8080  # when no port is configured (server.port's default is the gateway's)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: not stopping, and the gateway reports SERVING."""
    if request.app.state.stopping():
        return JSONResponse({"status": "stopping"}, status_code=503)
    if not await request.app.state.gateway.serving():
        return JSONResponse({"status": "the gateway is not SERVING", "gateway": request.app.state.gateway.address},
                            status_code=503)
    return JSONResponse({"status": "ok"})


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.response()


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return GatewayError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code).response()


async def internal_error(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: logged with its traceback here, a one-line JSON error for the client."""
    log.exception("request failed: %s %s", request.method, request.url.path)
    return GatewayError(500, f"internal error: {type(exc).__name__}", "internal_error").response()


def create_app(settings: WebSettings, stopping: Callable[[], bool] = lambda: False) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.gateway = GatewayClient(settings)  # grpc.aio channels belong to the running loop
        try:
            yield
        finally:
            await app.state.gateway.close()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *page.ROUTES,
            *openai_api.ROUTES,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={GatewayError: gateway_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.stopping = stopping
    return app


class GracefulServer(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGTERM/SIGINT and then exiting 0 like the other services (uvicorn
    itself raises the signal again once it has stopped, so the process would end as killed by SIGTERM)."""

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve_web(settings: Settings) -> None:
    """Runs the web tier until SIGTERM/SIGINT: HTTPS with server.tls_* (mutual with a client CA), like the gateway's port."""
    import ssl

    from ohlora.runtime.logging import setup_logging

    setup_logging(settings.server.log_level)
    server_settings = settings.server
    if "port" not in server_settings.model_fields_set:
        server_settings.port = WEB_PORT
    tls: dict[str, object] = {}
    if server_settings.tls_cert_file or server_settings.tls_key_file:
        tls = {"ssl_certfile": server_settings.tls_cert_file, "ssl_keyfile": server_settings.tls_key_file}
        if server_settings.tls_client_ca_file:
            tls |= {"ssl_ca_certs": server_settings.tls_client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    holder: dict[str, uvicorn.Server] = {}
    app = create_app(settings.web, stopping=lambda: "server" in holder and holder["server"].should_exit)
    config = uvicorn.Config(app, host=server_settings.host, port=server_settings.port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=int(server_settings.grace_seconds), **tls)
    holder["server"] = GracefulServer(config)
    log.info("web tier", extra={"fields": {"port": server_settings.port, "gateway": settings.web.gateway_address,
                                           "tls": bool(tls)}})
    holder["server"].run()
