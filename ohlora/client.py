"""Client-side helpers shared by the demo, benchmarks and tests: start, wait, stop services."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ohlora.runtime.tls import ClientTLS

SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class HealthReply:
    status: str  # 'SERVING', 'NOT_SERVING', ... or the gRPC error code name when the server does not answer
    error: str | None = None  # the gRPC error's details when the check failed; None when the server answered


def check_health(address: str, service: str = "", timeout: float = 1.0, tls: ClientTLS | None = None) -> HealthReply:
    """One grpc.health.v1 check. `tls` None: the OHLORA_HEALTH_TLS_* variables, as `ohlora health` reads them,
    so a port that speaks only TLS is checked over TLS. Raises TLSConfigError for unusable TLS settings."""
    tls = ClientTLS.from_env() if tls is None else tls
    try:
        with tls.channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        return HealthReply(exc.code().name, exc.details() or exc.code().name)
    return HealthReply(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def check_http_ready(address: str, timeout: float = 1.0, tls: ClientTLS | None = None, path: str = "/readyz") -> HealthReply:
    """The web tier's readiness (`ohlora serve web`): SERVING when GET `path` answers 200, over HTTPS when `tls`
    has a CA (its client certificate for mutual TLS, its server_name as the name the certificate must carry)."""
    import ssl

    import httpx

    tls = ClientTLS.from_env() if tls is None else tls
    options: dict[str, object] = {}
    extensions: dict[str, object] = {}
    if tls.ca_file:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file and tls.key_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        options["verify"] = context
        extensions = {"sni_hostname": tls.server_name} if tls.server_name else {}
    scheme = "https" if tls.ca_file else "http"
    try:
        with httpx.Client(timeout=timeout, **options) as client:  # type: ignore[arg-type]
            response = client.get(f"{scheme}://{address}{path}", extensions=extensions)
    except (httpx.HTTPError, OSError) as exc:
        return HealthReply("UNAVAILABLE", f"{type(exc).__name__}: {exc}")
    if response.status_code == 200:
        return HealthReply("SERVING")
    return HealthReply("NOT_SERVING", f"HTTP {response.status_code}: {response.text[:300]}")


def health_status(address: str, service: str = "", timeout: float = 1.0, tls: ClientTLS | None = None) -> str:
    """'SERVING', 'NOT_SERVING', ... or the gRPC error code name when the server does not answer (see check_health)."""
    return check_health(address, service, timeout, tls).status


def _resolve_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children outlive a killed parent, as before
        return None


# Looked up once in the parent: a forked child of a threaded process must not dlopen (another thread may
# have held the loader's lock at fork time); it only calls the function.
_PRCTL = _resolve_prctl()


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the thread that started it dies (Linux), so a supervisor,
    demo or test killed with SIGKILL leaves no model server or Redis behind (holding ports, memory and
    an AOF folder a restarted Redis would share). Only for children started from threads that live as
    long as their owner: a child started from a short-lived thread would die with that thread."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServiceProcessHandle:
    """A service started as a real subprocess (`python -m ohlora.cli serve ...`)."""

    def __init__(self, args: list[str], port: int, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.seen_statuses: list[str] = []
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ohlora.cli", *args, "--port", str(port), "--host", "127.0.0.1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=die_with_parent,
        )

    def poll_health(self) -> str:
        """Checks health once, remembering each change of status."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"service exited with {self.proc.returncode}; log:\n{self.log()}")
        status = health_status(self.address)
        if not self.seen_statuses or self.seen_statuses[-1] != status:
            self.seen_statuses.append(status)
        return status

    def wait_serving(self, timeout: float = 180.0) -> None:
        wait_all_serving([self], timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()

    @property
    def rss_bytes(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)


def wait_all_serving(handles: list[ServiceProcessHandle], timeout: float = 180.0) -> None:
    """Polls every handle in turn until all report SERVING (so each one's status history is seen)."""
    deadline = time.monotonic() + timeout
    pending = list(handles)
    while pending:
        pending = [h for h in pending if h.poll_health() != "SERVING"]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{pending[0].address} not SERVING after {timeout}s; log:\n{pending[0].log()}")
        time.sleep(0.05)


def wait_http_ready(handle: ServiceProcessHandle, path: str = "/readyz", timeout: float = 120.0) -> None:
    """Polls an HTTP service (`ohlora serve web`) until `path` answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if handle.proc.poll() is not None:
            raise RuntimeError(f"service exited with {handle.proc.returncode}; log:\n{handle.log()}")
        try:
            if httpx.get(f"http://{handle.address}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"http://{handle.address}{path} not ready after {timeout}s; log:\n{handle.log()}")
        time.sleep(0.1)
