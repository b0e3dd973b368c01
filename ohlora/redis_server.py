"""Starts a real Redis server (the system's redis-server) in a data directory, AOF on."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from ohlora.client import die_with_parent


class RedisServer:
    def __init__(self, data_dir: Path, port: int, binary: str | None = None, tied_to_parent: bool = False) -> None:
        """`tied_to_parent`: the server gets SIGTERM when the thread that starts it ends (die_with_parent).
        For owners that start it from a thread that lives as long as they do (`ohlora up`, a demo),
        not for callers that restart it from short-lived threads."""
        self.binary = binary or shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server not found: install it (Debian: apt-get install redis-server; `make redis`)")
        self.data_dir = data_dir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tied_to_parent = tied_to_parent

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
            stdout=open(self.data_dir / "redis.log", "ab"), stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if self.tied_to_parent else None,
            # Out of the terminal's process group: Ctrl+C in `ohlora up` reached redis-server too, which quit at
            # once, while the gateway was still saving the last turn's memory ("turn failed: ConnectionError").
            # Its owner stops it after the services (stop()).
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
