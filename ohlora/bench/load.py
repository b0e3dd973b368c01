"""load: N users talk at once, M turns each, through one gateway on tiny models (real processes, real Redis).

What counts is correctness under concurrency, not speed: every turn a user sent is in their turn log,
in order, with status ok (`load_lost_turns`); nothing of one user shows up in another's memories,
summary or turns (`load_cross_user_leaks`); no turn ended in an error (`load_errors`). Each user gets
a memory with a unique marker (recall is always on in this preset, so every final input carries it),
and the check looks for every other user's marker in everything a user can read. Turn latency
(until the reply and the expression are on screen; until the turn has settled) is printed as context.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ohlora.bench import SuiteResult, percentile
from ohlora.chat import call_metadata
from ohlora.presets import tiny_config
from ohlora.stack import LocalStack
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc

TEXTS = ["나 내일 시험이야", "로라야 안녕", "로라야 뭐 해?", "로라야 나 떨려", "오늘 날씨 좋다"]


@dataclass
class UserRun:
    user: str
    marker: str
    sent: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    visible_s: list[float] = field(default_factory=list)
    settled_s: list[float] = field(default_factory=list)


@dataclass
class LoadReport:
    users: int
    turns: int
    lost_turns: int
    leaks: int
    errors: int
    visible_s: list[float]
    settled_s: list[float]
    wall_s: float
    problems: list[str]



def _talk(stub: gateway_pb2_grpc.GatewayStub, run: UserRun, turns: int, timeout: float) -> None:
    stub.AddMemory(gateway_pb2.AddMemoryRequest(text=f"[암호: {run.marker}]"), metadata=call_metadata(run.user, None), timeout=timeout)
    for i in range(turns):
        text = TEXTS[i % len(TEXTS)]
        started = time.perf_counter()
        visible = None
        try:
            for event in stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=call_metadata(run.user, None), timeout=timeout):
                if event.HasField("expression") and visible is None:
                    visible = time.perf_counter() - started
                if event.HasField("error"):
                    run.errors.append(f"turn {i}: {event.error.message}")
        except grpc.RpcError as exc:
            run.errors.append(f"turn {i}: {exc.code().name}: {exc.details()}")
        run.sent.append(text)
        run.settled_s.append(time.perf_counter() - started)
        if visible is not None:
            run.visible_s.append(visible)


def _readable(stub: gateway_pb2_grpc.GatewayStub, user: str, limit: int) -> tuple[list[gateway_pb2.Turn], str]:
    """The user's turn log and everything they can read, as one text to search for other users' markers."""
    log = list(stub.ListTurns(gateway_pb2.ListTurnsRequest(limit=limit), metadata=call_metadata(user, None), timeout=60).turns)
    memories = stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=call_metadata(user, None), timeout=60).memories
    exported = stub.ExportMemories(gateway_pb2.ExportMemoriesRequest(), metadata=call_metadata(user, None), timeout=60).content
    parts = [exported, *(m.text for m in memories)]
    for t in log:
        parts += [t.user_text, t.final_input, t.reply, t.summary, t.memory_written, *t.errors]
    return log, "\n".join(parts)


def run_load(address: str, users: int, turns: int, timeout: float = 600.0) -> LoadReport:
    """Runs the load against a gateway and checks the outcome (see the module docstring)."""
    stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(address))
    tag = uuid.uuid4().hex[:6]
    runs = [UserRun(f"load-{tag}-{i:02d}", f"q{uuid.uuid4().hex[:10]}") for i in range(users)]
    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        futures = [pool.submit(_talk, stub, run, turns, timeout) for run in runs]
        done, pending = wait(futures, timeout=timeout)
    wall = time.perf_counter() - started
    problems = [f"a user thread did not finish within {timeout:.0f} s (deadlock?)" for _ in pending]
    problems += [f"{run.user}: {f.exception()!r}" for run, f in zip(runs, futures) if f.done() and f.exception()]
    lost = leaks = errors = 0
    for run in runs:
        log, readable = _readable(stub, run.user, limit=turns + 10)
        lost += turns - sum(1 for t, text in zip(log, run.sent) if t.user_text == text)  # never sent counts too
        errors += max(len(run.errors), sum(1 for t in log if t.status != "ok"))
        if [t.user_text for t in log] != run.sent:
            problems.append(f"{run.user}: log {[(t.user_text, t.status) for t in log]} != sent {run.sent}")
        if run.marker not in readable:
            problems.append(f"{run.user}: their own marker is missing (the check would be blind)")
        for other in runs:
            if other is not run and other.marker in readable:
                leaks += 1
                problems.append(f"{other.user}'s marker appears in what {run.user} can read")
    problems += [e for r in runs for e in r.errors]
    return LoadReport(users, turns, lost, leaks, errors, [v for r in runs for v in r.visible_s],
                      [v for r in runs for v in r.settled_s], wall, problems)


def load(quick: bool) -> SuiteResult:
    users, turns = (4, 3) if quick else (16, 10)
    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-load-"))
    config = tiny_config(root / "models")
    stack = LocalStack(root, config).standard(llm_env={"OHLORA_LLM__TORCH_THREADS": "1"})
    try:
        run_load(stack.main.address, 2, 1)  # warm-up
        report = run_load(stack.main.address, users, turns)
    finally:
        stack.close()

    v, s = report.visible_s, report.settled_s
    return SuiteResult(
        columns=["measure", "p50 s", "p95 s", "max s"],
        rows=[["until reply + expression", percentile(v, 0.5), percentile(v, 0.95), max(v, default=float("nan"))],
              ["until the turn settled", percentile(s, 0.5), percentile(s, 0.95), max(s, default=float("nan"))]],
        results={
            "load_lost_turns": report.lost_turns,
            "load_cross_user_leaks": report.leaks,
            "load_errors": report.errors,
            "load_turn_p50_s": percentile(s, 0.5),
            "load_turn_p95_s": percentile(s, 0.95),
            "load_visible_p50_s": percentile(v, 0.5),
            "load_visible_p95_s": percentile(v, 0.95),
        },
        notes=[f"{users} users x {turns} turns at once, {len(s)} turns in {report.wall_s:.1f} s "
               f"({len(s) / report.wall_s:.2f} turns/s); tiny GPT-NeoX + LoRA fine-tuned at start-up, two LLM "
               "processes (message+pose, memory+summary), sketch face, one gateway, default limits",
               *report.problems[:20]],
        details={"problems": report.problems},
    )
