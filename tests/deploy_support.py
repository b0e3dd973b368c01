"""Helpers for the deployment tests: read compose files through the real `docker-compose`, and run
each compose service's own command on this machine, as the container would, with tiny models.

What a container gives a process is replaced by its local equivalent, and nothing else changes:
service names become 127.0.0.1, container ports become free local ports, /run/secrets/* files
become test files, /models becomes this machine's models folder, and (where the original's weights
would be needed) the models volume's config becomes the tiny preset's. The command, the entry
point and every other environment variable are taken from the compose file as they are, so a
compose file that drifts from the CLI or the settings fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from ohlora.client import free_port, health_status
from ohlora.runtime import tls

REPO_ROOT = Path(__file__).resolve().parent.parent
OHLORA = str(Path(sys.executable).parent / "ohlora")  # the console entry point the images run


def require_tool(name: str) -> str:
    """The tool's path; missing, it fails the run in CI (`make test` installs it) and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (`make system-deps` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def compose_config(file: str, env: dict[str, str] | None = None) -> dict:
    """The file as `docker-compose config` validates and resolves it (anchors merged, variables set)."""
    tool = require_tool("docker-compose")
    done = subprocess.run([tool, "-f", file, "config"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"docker-compose rejects {file}:\n{done.stderr}")
    return yaml.safe_load(done.stdout)


def in_profile(service: dict, profile: str) -> bool:
    """Whether `docker compose` with COMPOSE_PROFILES=profile starts this service."""
    return not service.get("profiles") or profile in service["profiles"]


def unescape(value: str) -> str:
    """Compose writes a literal $ as $$; the container sees one."""
    return value.replace("$$", "$")


def make_certificates(folder: Path, hosts: dict[str, list[str]]) -> dict[str, tuple[Path, Path]]:
    """A CA and, per host, a certificate for both server and client use, with the given DNS names
    (and 127.0.0.1, for health checks inside the host) as subject alternative names."""
    openssl = require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ohlora-test-ca",
                    "-keyout", ca_key, "-out", ca_crt], check=True, capture_output=True)
    issued: dict[str, tuple[Path, Path]] = {}
    for host, names in hosts.items():
        key, csr, crt, ext = (folder / f"{host}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
        alt = ",".join([*(f"DNS:{n}" for n in names), "IP:127.0.0.1"])
        ext.write_text(f"subjectAltName={alt}\nextendedKeyUsage=serverAuth,clientAuth\n")
        subprocess.run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", key,
                        "-out", csr], check=True, capture_output=True)
        subprocess.run([openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                        "-days", "2", "-extfile", ext, "-out", crt], check=True, capture_output=True)
        issued[host] = (crt, key)
    return issued


@dataclass
class Started:
    """One compose service running as a local process."""

    name: str
    port: int
    compose_port: int
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path
    stop_grace_seconds: float

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def seconds(duration: str | int | float) -> float:
    """Compose durations: '45s', '1m30s', '5m'."""
    if isinstance(duration, (int, float)):
        return float(duration)
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


@dataclass
class Host:
    """Runs the services of one compose file (one host) as local processes."""

    root: Path
    config: Path | None  # a config in place of the services' own (the tiny preset's, for the ohlora-v2 weights)
    secrets: dict[str, Path]  # /run/secrets/NAME -> a local file
    models: Path | None = None  # what the /models volume is on this machine
    # (compose host name, compose port) -> local port; shared between hosts so addresses resolve across them
    endpoints: dict[tuple[str, int], int] = field(default_factory=dict)
    started: list[Started] = field(default_factory=list)

    def local(self, value: str) -> str:
        """A compose value as this machine needs it: secret paths and known host:port pairs replaced."""
        for path in sorted(self.secrets, key=len, reverse=True):
            value = value.replace(path, str(self.secrets[path]))
        if self.models is not None and (value == "/models" or value.startswith("/models/")):
            value = str(self.models) + value[len("/models"):]

        def endpoint(match: re.Match[str]) -> str:
            key = (match.group(2), int(match.group(3)))
            if key not in self.endpoints:
                raise AssertionError(f"{match.group(0)!r} names no service of the layout (known: {sorted(self.endpoints)})")
            return f"{match.group(1) or ''}127.0.0.1:{self.endpoints[key]}"

        return re.sub(r"(redis://(?:[^@/]*@)?|dns:///)?([A-Za-z][A-Za-z0-9.-]*):(\d+)", endpoint, value)

    def environment(self, service: dict) -> dict[str, str]:
        env = {k: self.local("" if v is None else str(v)) for k, v in (service.get("environment") or {}).items()}
        if self.config is not None and "OHLORA_CONFIG" in env:
            env["OHLORA_CONFIG"] = str(self.config)
        if "OHLORA_SERVER__PORT" in env:
            env["OHLORA_SERVER__HOST"] = "127.0.0.1"
        return env

    def run_once(self, name: str, service: dict, timeout: float = 600.0) -> subprocess.CompletedProcess:
        """A one-off service (`docker compose run`, or a dependency that must complete): runs it to the end."""
        assert service.get("entrypoint") == ["ohlora"], f"{name}: the images' entry point is the ohlora CLI"
        argv = [OHLORA, *(self.local(a) for a in service["command"])]
        return subprocess.run(argv, env={**os.environ, **self.environment(service)}, cwd=self.root,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, name: str, service: dict) -> Started:
        """Starts the service's entrypoint + command, exactly as compose would, on a free port."""
        assert service.get("entrypoint") == ["ohlora"], f"{name}: the images' entry point is the ohlora CLI"
        env = self.environment(service)
        compose_port = int(env["OHLORA_SERVER__PORT"])
        port = free_port()
        env["OHLORA_SERVER__PORT"] = str(port)
        log_path = self.root / f"{name}.log"
        proc = subprocess.Popen([OHLORA, *service["command"]], stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, cwd=self.root)
        self.endpoints[(name, compose_port)] = port
        handle = Started(name, port, compose_port, env, proc, log_path, seconds(service.get("stop_grace_period", "10s")))
        self.started.append(handle)
        return handle

    def start_redis(self, name: str, service: dict) -> Started:
        """Runs the compose file's own Redis command line with the system's redis-server."""
        require_tool("redis-server")
        command = service.get("command")
        assert command[:2] == ["sh", "-c"], "redis starts through sh so its password comes from the secret file"
        port = free_port()
        data = self.root / f"{name}-data"
        data.mkdir()
        script = self.local(unescape(command[2])).replace("--dir /data", f"--dir {data}")
        assert "redis-server - " in script
        script = script.replace("redis-server - ", f"redis-server - --port {port} --bind 127.0.0.1 ", 1)
        log_path = self.root / f"{name}.log"
        proc = subprocess.Popen(["sh", "-c", script], stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        self.endpoints[(name, 6379)] = port
        handle = Started(name, port, 6379, {}, proc, log_path, seconds(service.get("stop_grace_period", "10s")))
        self.started.append(handle)
        return handle

    def healthcheck(self, handle: Started, service: dict, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Runs the service's compose health check (with its container environment) once."""
        test = service["healthcheck"]["test"]
        env = {**os.environ, **handle.env}
        if test[0] == "CMD":
            argv = [OHLORA if test[1] == "ohlora" else test[1], *test[2:]]
            container_address = f"127.0.0.1:{handle.compose_port}"
            assert container_address in argv, f"{handle.name}: the health check must ask the port the service listens on"
            argv = [handle.address if a == container_address else a for a in argv]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        script = self.local(unescape(test[1])).replace("redis-cli ", f"redis-cli -p {handle.port} ", 1)
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=timeout)

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM to everything, newest first; returns each exit code (None: killed after its grace)."""
        codes: dict[str, int | None] = {}
        for handle in reversed(self.started):
            if handle.proc.poll() is None:
                handle.proc.send_signal(signal.SIGTERM)
            try:
                codes[handle.name] = handle.proc.wait(handle.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                handle.proc.kill()
                handle.proc.wait()
                codes[handle.name] = None
        self.started.clear()
        return codes


def health(address: str, env: dict[str, str], timeout: float = 1.0) -> str:
    """One gRPC health check with the same TLS settings `ohlora health` takes from OHLORA_HEALTH_TLS_*."""
    return health_status(address, timeout=timeout, tls=tls.ClientTLS.from_env(env))


def wait_serving(handles: list[Started], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(handles)
    while pending:
        for handle in pending:
            if handle.proc.poll() is not None:
                raise AssertionError(f"{handle.name} exited with {handle.proc.returncode}:\n{handle.log()}")
        pending = [h for h in pending if health(h.address, h.env) != "SERVING"]
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"{pending[0].name} not SERVING after {timeout}s:\n{pending[0].log()}")
        time.sleep(0.2)


def chat(address: str, user: str, text: str = "로라야 안녕", timeout: float = 300) -> list:
    """Every event of one turn through the gateway at `address`, as `user`."""
    from ohlora.chat import call_metadata
    from ohlora.v1 import gateway_pb2, gateway_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        return list(stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=call_metadata(user, None), timeout=timeout))
