"""Shared test fixtures: upstream reference data, tiny models, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def upstream_fixtures_dir() -> Path:
    """../shared/fixtures/upstream by default; OHLORA_UPSTREAM_FIXTURES overrides."""
    default = REPO_ROOT.parent / "shared" / "fixtures" / "upstream"
    return Path(os.environ.get("OHLORA_UPSTREAM_FIXTURES", default))


def require_upstream_file(name: str) -> Path:
    path = upstream_fixtures_dir() / name
    if not path.exists():
        message = f"upstream fixture {path} is missing (set OHLORA_UPSTREAM_FIXTURES)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def parser_cases() -> list[dict]:
    path = require_upstream_file("parser_cases.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """A tiny GPT-NeoX base with one LoRA adapter per task and a tiny sentence embedder, built once."""
    from ohlora.tiny import build_tiny_preset

    return build_tiny_preset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_config(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file pointing every task (original dialect) at the tiny models."""
    path = tmp_path_factory.mktemp("config") / "ohlora.toml"
    path.write_text(tiny_models.config_toml("original"))
    return path


@pytest.fixture
def start_service(tmp_path):
    """Starts `ohlora serve ...` as real subprocesses; stops them after the test."""
    from ohlora.client import ServiceProcessHandle, free_port

    started: list[ServiceProcessHandle] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServiceProcessHandle:
        handle = ServiceProcessHandle(list(args), free_port(), tmp_path / f"service-{len(started)}.log", env)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.terminate()


@pytest.fixture
async def store(redis_server):
    """A gateway RedisStore on the shared real Redis, under a key prefix of its own."""
    import uuid

    from gateway.store import RedisStore

    s = RedisStore.connect(redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    await s.check_schema()
    yield s
    await s.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, AOF on."""
    from ohlora.client import free_port
    from ohlora.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_preset_config(tmp_path_factory) -> Path:
    """Tiny models fine-tuned once on a few examples (they answer in the original's format), recall always on."""
    from ohlora.tiny import build_tiny_preset

    # OHLORA_TEST_PRESET_CACHE=/some/dir keeps the built preset between local runs (CI builds it fresh).
    cache = os.environ.get("OHLORA_TEST_PRESET_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("trained-shared")
    config = root / "ohlora.toml"
    if not config.exists():
        preset = build_tiny_preset(root / "models", trained=True)
        config.write_text(preset.config_toml().replace("threshold = 0.9", "threshold = -1.0"))
    return config


@pytest.fixture(scope="session")
def shared_stack(trained_preset_config, tmp_path_factory):
    """One local stack (Redis, two LLM processes, the sketch face, a gateway with auth off) for the
    reliability tests; tests start extra gateways on it (auth on, other limits) as they need."""
    from ohlora.stack import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("shared-stack"), trained_preset_config)
    try:
        yield stack.standard()
    finally:
        stack.close()


def gateway_for(stack, **settings: object):
    """Another gateway process on `stack`'s services and Redis, with OHLORA_GATEWAY__* settings."""
    env = {f"OHLORA_GATEWAY__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items()}
    handle = stack.gateway(stack.fast.address, stack.background.address, stack.background.address,
                           stack.fast.address, stack.face.address, env)
    handle.wait_serving()
    return handle


@contextlib.contextmanager
def servicer_on_loopback(register: Callable[[object], None]) -> Iterator[str]:
    """A real grpc.aio server in a background thread (its own event loop) for a servicer written in a test;
    `register(server)` adds the servicer. Yields the address; the server stops when the block ends."""
    from ohlora.client import free_port

    port, ready, stop = free_port(), threading.Event(), threading.Event()

    def serve() -> None:
        async def main() -> None:
            import grpc

            server = grpc.aio.server()
            register(server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await server.stop(0)

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the test's gRPC server did not start")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)


def md(user: str) -> tuple[tuple[str, str], ...]:
    """Call metadata naming the user (the gateway with auth off takes the user from here)."""
    from ohlora.chat import call_metadata

    return call_metadata(user, None)


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    """Polls until condition() is true; fails naming `what` instead of hanging until pytest's timeout."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.05)


class WatchReader:
    """Reads a Watch stream in a background thread as a real client keeps doing: (arrival time, frame) pairs,
    and the error that ended the stream, if any, so a test can report it."""

    def __init__(self, watch) -> None:
        import grpc

        self.watch = watch
        self.frames: list[tuple[float, object]] = []
        self.error: grpc.RpcError | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import time

        import grpc

        try:
            for frame in self.watch:
                self.frames.append((time.monotonic(), frame))
        except grpc.RpcError as exc:
            self.error = exc

    def since(self, moment: float) -> list[object]:
        return [frame for at, frame in self.frames if at > moment]

    def wait_frames(self, count: int, seconds: float = 60) -> None:
        wait_until(lambda: len(self.frames) >= count or self.error is not None, seconds, f"{count} Watch frames")
        assert len(self.frames) >= count, f"the Watch stream ended: {self.error}"
