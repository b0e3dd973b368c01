"""`ohlora up`: the whole system on this machine, supervised, then the chat.

Starts Redis (AOF on, in the data folder), the model services and the gateway as
supervised processes: started in health order, each in its own session (Ctrl+C in the
chat does not reach them), logs in <data>/logs, restarted when they die. Then opens
`ohlora chat` on the gateway; leaving the chat stops everything. `--detach` leaves it
running in the background (`ohlora down` stops it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ohlora.client import die_with_parent, free_port, health_status
from ohlora.redis_server import RedisServer

PID_FILE = "up.json"
# What is running where (config, Redis, every address), for `ohlora doctor` and other tools.
SERVICES_FILE = "services.json"


@dataclass
class Supervised:
    name: str
    args: list[str]
    address: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0


class Supervisor:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.logs = data / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.services: list[Supervised] = []
        self.stopping = threading.Event()
        self._watch: threading.Thread | None = None

    def spawn(self, svc: Supervised) -> None:
        log = open(self.logs / f"{svc.name}.log", "ab")
        svc.proc = subprocess.Popen(
            [sys.executable, "-m", "ohlora.cli", *svc.args], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **svc.env}, start_new_session=True, preexec_fn=die_with_parent,
        )

    def start(self, groups: list[list[Supervised]], timeout: float = 600.0) -> None:
        """Starts each group once the previous one is healthy."""
        for group in groups:
            for svc in group:
                self.services.append(svc)
                self.spawn(svc)
            deadline = time.monotonic() + timeout
            for svc in group:
                while health_status(svc.address) != "SERVING":
                    if svc.proc is not None and svc.proc.poll() is not None:
                        raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}; see {self.logs / svc.name}.log")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{svc.name} not healthy after {timeout:.0f} s; see {self.logs / svc.name}.log")
                    time.sleep(0.1)
        self._watch = threading.Thread(target=self._restart_dead, daemon=True)
        self._watch.start()

    def _restart_dead(self) -> None:
        while not self.stopping.wait(0.5):
            for svc in self.services:
                if svc.proc is not None and svc.proc.poll() is not None and not self.stopping.is_set():
                    svc.restarts += 1
                    with open(self.logs / "supervisor.log", "a") as fh:
                        fh.write(f"{time.strftime('%H:%M:%S')} {svc.name} exited ({svc.proc.returncode}); restart {svc.restarts}\n")
                    time.sleep(min(5.0, 0.5 * svc.restarts))
                    self.spawn(svc)

    def stop(self) -> None:
        self.stopping.set()
        for svc in reversed(self.services):
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.terminate()
        for svc in reversed(self.services):
            if svc.proc is not None:
                try:
                    svc.proc.wait(60)
                except subprocess.TimeoutExpired:
                    svc.proc.kill()

    def pids(self) -> dict[str, int]:
        return {s.name: s.proc.pid for s in self.services if s.proc is not None}


def llm_processes(config: Path) -> tuple[list[Supervised], dict[str, str]]:
    """One LLM process per base model of the config's tasks (LLMSettings.process_groups), and each task's address:
    mini's memory, summary and pose share the 0.5B, its reply on the 1.5B gets a process of its own. The process is
    named `llm` when it hosts all four."""
    from ohlora.config import load_settings

    groups = load_settings(config).llm.process_groups()
    processes, addresses = [], {}
    for tasks in groups:
        port = free_port()
        name = "llm" if len(groups) == 1 else "llm-" + "-".join(tasks)
        args = ["serve", "llm", "--tasks", ",".join(tasks), "--config", str(config), "--port", str(port)]
        processes.append(Supervised(name, args, f"127.0.0.1:{port}"))
        addresses.update({task: f"127.0.0.1:{port}" for task in tasks})
    return processes, addresses


def run_up(config: Path, data: Path, port: int, detach: bool, chat_args: dict) -> int:
    data.mkdir(parents=True, exist_ok=True)
    llms, addresses = llm_processes(config)
    redis = RedisServer(data / "redis", free_port(), tied_to_parent=True).start()
    supervisor = Supervisor(data)
    face_port = free_port()
    face_address = f"127.0.0.1:{face_port}"
    gateway_env = {"OHLORA_GATEWAY__REDIS_URL": redis.url, "OHLORA_GATEWAY__FACE_ADDRESS": face_address,
                   **{f"OHLORA_GATEWAY__{t.upper()}_ADDRESS": address for t, address in addresses.items()}}
    gateway_address = f"127.0.0.1:{port}"
    try:
        print("starting the model services ...", flush=True)
        supervisor.start([
            [*llms, Supervised("face", ["serve", "face", "--config", str(config), "--port", str(face_port)], face_address)],
            [Supervised("gateway", ["serve", "gateway", "--port", str(port)], gateway_address, gateway_env)],
        ])
        (data / PID_FILE).write_text(json.dumps({"supervisor": os.getpid(), "redis": redis.proc.pid, **supervisor.pids()}))
        (data / SERVICES_FILE).write_text(json.dumps({
            "config": str(config), "redis_url": redis.url, "gateway": gateway_address, "face": face_address,
            **addresses}, indent=1))
        print(f"Oh-LoRA is up: gateway {gateway_address}, logs in {supervisor.logs}", flush=True)
        if detach:
            signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
            supervisor.stopping.wait()
            return 0
        from ohlora.chat import run_chat

        return run_chat(gateway_address, **chat_args)
    finally:
        supervisor.stop()
        redis.stop()
        (data / PID_FILE).unlink(missing_ok=True)
        (data / SERVICES_FILE).unlink(missing_ok=True)


def start_detached(config: Path, data: Path, port: int, timeout: float = 900.0) -> int:
    """Runs the supervisor in its own session, waits until the gateway serves, and returns."""
    args = [sys.executable, "-m", "ohlora.cli", "up", "--background", "--data", str(data), "--port", str(port),
            "--config", str(config)]
    data.mkdir(parents=True, exist_ok=True)
    log = data / "up.log"
    proc = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while health_status(f"127.0.0.1:{port}") != "SERVING":
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"Oh-LoRA did not start; see {log}")
            return 1
        time.sleep(0.2)
    print(f"Oh-LoRA is running in the background: `ohlora chat --gateway 127.0.0.1:{port}`; stop it with `ohlora down`")
    return 0


def run_down(data: Path) -> int:
    path = data / PID_FILE
    if not path.exists():
        print(f"nothing is running from {data}")
        return 1
    os.kill(json.loads(path.read_text())["supervisor"], signal.SIGTERM)
    print("stopping Oh-LoRA ...")
    return 0
