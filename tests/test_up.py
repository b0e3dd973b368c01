"""`ohlora up` through a pseudo-terminal: everything starts, a person chats, a killed service comes back,
Ctrl+C ends the chat and stops every process."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pexpect

from ohlora.chat import FAREWELL, PROMPT, SPEAKER
from ohlora.client import free_port, health_status


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_supervises_and_chats(tmp_path):
    port = free_port()
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    child = pexpect.spawn(sys.executable, ["-m", "ohlora.cli", "up", "--preset", "tiny", "--models", str(tmp_path / "models"), "--data", str(tmp_path), "--port", str(port),
                                           "--view", "none"], env=env, encoding="utf-8", timeout=300)
    try:
        child.expect("Oh-LoRA is up")
        child.expect_exact(PROMPT)
        pids = json.loads((tmp_path / "up.json").read_text())
        assert set(pids) >= {"supervisor", "redis", "llm", "face", "gateway"}
        assert (tmp_path / "redis" / "appendonlydir").exists(), "Redis runs with AOF in the data folder"
        child.sendline("나 내일 시험이야")
        child.expect_exact(SPEAKER)
        child.expect_exact(PROMPT)

        os.kill(pids["face"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        restarted = tmp_path / "logs" / "supervisor.log"
        while not (restarted.exists() and "face exited" in restarted.read_text()):
            assert time.monotonic() < deadline, "the supervisor restarts a dead service"
            time.sleep(0.2)
        child.sendline("로라야 나 떨려")
        child.expect_exact(SPEAKER)
        child.expect_exact(PROMPT)
        child.sendintr()
        child.expect_exact(FAREWELL)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    time.sleep(1.0)
    assert not [name for name, pid in pids.items() if name != "face" and alive(pid)], "everything stopped"
    assert health_status(f"127.0.0.1:{port}") == "UNAVAILABLE"
    assert not (tmp_path / "up.json").exists()
    # Ctrl+C came as the last turn settled in the background: Redis outlives the gateway, so nothing is lost.
    assert "turn failed" not in (tmp_path / "logs" / "gateway.log").read_text()


def test_detach_then_down(tmp_path):
    import subprocess

    port = free_port()
    base = [sys.executable, "-m", "ohlora.cli"]
    started = subprocess.run([*base, "up", "--detach", "--preset", "tiny", "--models", str(tmp_path / "models"), "--data", str(tmp_path), "--port", str(port)],
                             capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stdout + (tmp_path / "up.log").read_text()[-2000:]
    assert health_status(f"127.0.0.1:{port}") == "SERVING"
    stopped = subprocess.run([*base, "down", "--data", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0
    deadline = time.monotonic() + 90
    while health_status(f"127.0.0.1:{port}") != "UNAVAILABLE":
        assert time.monotonic() < deadline, "ohlora down stops the gateway"
        time.sleep(0.2)
    while (tmp_path / "up.json").exists():
        assert time.monotonic() < deadline, "and the supervisor cleans up"
        time.sleep(0.2)


def test_children_die_with_a_killed_parent(tmp_path):
    """A supervisor (or demo, or test) killed with SIGKILL leaves no Redis behind to share its AOF folder."""
    import subprocess

    script = ("import sys, time; from ohlora.client import free_port; from ohlora.redis_server import RedisServer; "
              f"r = RedisServer(__import__('pathlib').Path({str(tmp_path)!r}), free_port(), tied_to_parent=True).start(); "
              "print(r.proc.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    redis_pid = int(parent.stdout.readline())
    assert alive(redis_pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(redis_pid):
        assert time.monotonic() < deadline, "redis-server outlived its killed parent"
        time.sleep(0.1)
