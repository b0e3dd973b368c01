"""Gateway benchmarks on a local stack of real processes (tiny models fine-tuned like the tests').

gateway-overhead: a whole turn through the gateway vs the same service calls, with the same
concurrency, made directly from this process. critical-path: time until the client has the
reply and the expression vs the original's strictly sequential order.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from ohlora.bench import SuiteResult, side_by_side
from ohlora.chat import call_metadata
from ohlora.stack import LocalStack
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc, llm_pb2, llm_pb2_grpc

TURNS = ["나 내일 시험이야", "로라야 안녕", "로라야 뭐 해?"]


class Direct:
    """The model services called straight from here: what a turn costs without the gateway."""

    def __init__(self, stack: LocalStack) -> None:
        fast, background = grpc.insecure_channel(stack.fast.address), grpc.insecure_channel(stack.background.address)
        self.message = llm_pb2_grpc.MessageServiceStub(fast)
        self.pose = llm_pb2_grpc.PoseServiceStub(fast)
        self.memory = llm_pb2_grpc.MemoryServiceStub(background)
        self.summary = llm_pb2_grpc.SummaryServiceStub(background)
        self.pool = ThreadPoolExecutor(4)

    def reply(self, text: str) -> str:
        for chunk in self.message.Reply(llm_pb2.ReplyRequest(final_input=text)):
            if chunk.HasField("done"):
                return chunk.done.text
        raise RuntimeError("no reply")

    def concurrent_turn(self, text: str) -> tuple[float, float]:
        """The gateway's schedule without the gateway: (time to reply + expression, time to settle)."""
        started = time.perf_counter()
        self.message.CheckInput(llm_pb2.CheckInputRequest(text=text))
        self.memory.Embed(llm_pb2.EmbedRequest(texts=[text], kind="query"))
        extraction = self.pool.submit(self.memory.Extract, llm_pb2.ExtractRequest(final_input=text))
        reply = self.reply(text)
        summary = self.pool.submit(self.summary.Summarize, llm_pb2.SummarizeRequest(final_input=text, reply=reply))
        self.pose.DecideExpression(llm_pb2.PoseRequest(reply=reply))
        visible = time.perf_counter() - started
        extraction.result()
        summary.result()
        return visible, time.perf_counter() - started

    def sequential_turn(self, text: str) -> float:
        """The original's order: message -> memory -> summary -> pose, answer shown at the end."""
        started = time.perf_counter()
        reply = self.reply(text)
        self.memory.Extract(llm_pb2.ExtractRequest(final_input=text))
        self.summary.Summarize(llm_pb2.SummarizeRequest(final_input=text, reply=reply))
        self.pose.DecideExpression(llm_pb2.PoseRequest(reply=reply))
        return time.perf_counter() - started


def gateway_turn(stub: gateway_pb2_grpc.GatewayStub, text: str, user: str) -> tuple[float, float]:
    """(time until the client has reply + expression, time until the turn settled)."""
    started = time.perf_counter()
    visible = None
    for event in stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=call_metadata(user, None)):
        if event.HasField("expression"):
            visible = time.perf_counter() - started
    assert visible is not None, "the turn gave no expression"
    return visible, time.perf_counter() - started


def _stack(quick: bool) -> tuple[LocalStack, Path]:
    from ohlora.tiny import build_tiny_preset

    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-"))
    # Wider than the test preset, so a call costs milliseconds of model work, as calls do on real models.
    preset = build_tiny_preset(root / "models", trained=True, hidden=256, layers=4)
    config = root / "ohlora.toml"
    config.write_text(preset.config_toml())
    # One torch thread per model process: on this 2-core machine the two processes then run side by
    # side like services on separate GPUs instead of fighting over both cores.
    return LocalStack(root, config).standard(llm_env={"OHLORA_LLM__TORCH_THREADS": "1"}), root


def _measure(quick: bool, fn) -> SuiteResult:
    stack, _ = _stack(quick)
    try:
        direct = Direct(stack)
        stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(stack.main.address))
        for text in TURNS:  # warm-up both paths
            direct.concurrent_turn(text)
            gateway_turn(stub, text, _fresh_user())
        return fn(direct, stub, 4 if quick else 15)
    finally:
        stack.close()


def gateway_overhead(quick: bool) -> SuiteResult:
    def run(direct: Direct, stub, rounds: int) -> SuiteResult:
        via_gateway, straight = [], []
        for i in range(rounds):
            for text in TURNS:
                via_gateway.append(gateway_turn(stub, text, _fresh_user())[1])
                straight.append(direct.concurrent_turn(text)[1])
        return side_by_side(
            "median s", "gateway_overhead_ratio", ("through the gateway", via_gateway), ("direct service calls", straight),
            ["a whole turn (until memory and summary are done), alternating gateway/direct; the gateway adds "
             "Redis (lock, recall, turn log, summary, memory), a gesture publish and one more gRPC hop"],
        )
    return _measure(quick, run)


def critical_path(quick: bool) -> SuiteResult:
    def run(direct: Direct, stub, rounds: int) -> SuiteResult:
        visible, sequential = [], []
        for i in range(rounds):
            for text in TURNS:
                visible.append(gateway_turn(stub, text, _fresh_user())[0])
                sequential.append(direct.sequential_turn(text))
        return side_by_side(
            "median s until reply + expression", "critical_path_ratio",
            ("gateway (memory, summary off the critical path)", visible),
            ("original order (message, memory, summary, pose)", sequential),
            ["same processes and models for both; tiny GPT-NeoX with LoRA adapters fine-tuned at start-up"], "schedule",
        )
    return _measure(quick, run)


def _fresh_user() -> str:
    """A new user per turn: no memory or summary, so both paths send the model the same final input."""
    return f"bench-{uuid.uuid4().hex[:10]}"
