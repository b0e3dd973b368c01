"""The process shell of every service: gRPC server, health, reflection, signals, graceful stop.

Order of life: the port opens with health NOT_SERVING; the model loads and warms up
(off the event loop); health turns SERVING; on SIGTERM/SIGINT health turns NOT_SERVING,
load balancers get `drain_seconds` to notice, then the server stops accepting calls
and gives in-flight calls `grace_seconds` to finish; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ohlora.config import ServerSettings
from ohlora.runtime import tls
from ohlora.runtime.cpu_memory import keep_freed_memory_if_on_cpu
from ohlora.runtime.interceptors import ServiceInterceptor
from ohlora.runtime.logging import setup_logging
from ohlora.runtime.metrics import serve_metrics

log = logging.getLogger(__name__)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service hosted by a process: its full name and how to add it to a server."""

    full_name: str
    register: Callable[[grpc.aio.Server], None]


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    if settings.max_connection_age_seconds is not None:
        # Clients then reconnect and re-resolve DNS: new replicas behind a headless Service get traffic.
        age_ms = int(settings.max_connection_age_seconds * 1000)
        options += [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", age_ms)]
    return options


class ServiceProcess:
    """Runs bindings on one server until a signal arrives."""

    def __init__(
        self,
        settings: ServerSettings,
        bindings: list[ServiceBinding],
        load: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]] | None = None,
        drain_seconds: float = 0.5,
        devices: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.devices = devices  # configured devices of its models: on a CPU the heap is set up for them
        self.bindings = bindings
        self.load = load
        self.close = close
        self.drain_seconds = drain_seconds
        self.health = HealthServicer()
        self.stopping = asyncio.Event()
        self.port: int | None = None

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ["", *(b.full_name for b in self.bindings)]:
            await self.health.set(name, status)

    def request_stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        server = grpc.aio.server(interceptors=[ServiceInterceptor()], options=server_options(self.settings))
        for binding in self.bindings:
            binding.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [b.full_name for b in self.bindings] + [HEALTH_SERVICE, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = tls.bind(server, self.settings)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        log.info("listening", extra={"fields": {"port": self.port, "services": names[:-2]}})

        loading = asyncio.create_task(self.load())
        stop_wait = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({loading, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            loading.result()  # a failed load ends the process with its error
            await self._set_all(health_pb2.HealthCheckResponse.SERVING)
            log.info("serving", extra={"fields": {"port": self.port}})
            await stop_wait
        else:
            loading.cancel()

        log.info("stopping", extra={"fields": {"grace_seconds": self.settings.grace_seconds}})
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.drain_seconds)
        await server.stop(self.settings.grace_seconds)
        if self.close is not None:
            await self.close()
        log.info("stopped")


def run_service_process(process: ServiceProcess) -> None:
    setup_logging(process.settings.log_level)
    if keep_freed_memory_if_on_cpu(*process.devices):  # before any thread starts (metrics, gRPC)
        log.info("models on the CPU: freed memory is kept in the heap (OHLORA_KEEP_FREED_MEMORY=0 turns this off)")
    if process.settings.metrics_port is not None:
        port = serve_metrics(process.settings.metrics_port)
        log.info("metrics", extra={"fields": {"port": port}})
    asyncio.run(process.run())
