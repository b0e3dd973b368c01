"""`ohlora demo`: the LLM half of one Oh-LoRA turn, on models that need no download.

Builds the tiny preset (or uses --config), starts the consolidated LLM service as a
real process, then runs turns in the original's order (reply streamed, memory,
summary, expression) and prints what each service answered. The full pipeline
(gateway, Redis memory, face) is added by later issues.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc

from ohlora.client import ServiceProcessHandle, free_port
from ohlora.v1 import llm_pb2, llm_pb2_grpc

DEMO_TURNS = ["로라야 오늘 뭐 해?", "나 내일 시험이야"]


def run_demo(config: Path | None, turns: list[str], echo=print) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ohlora-demo-"))
    if config is None:
        from ohlora.tiny import build_tiny_preset

        echo("building the tiny preset (random weights: replies are noise, the plumbing is real) ...")
        preset = build_tiny_preset(workdir / "tiny")
        config = workdir / "ohlora.toml"
        config.write_text(preset.config_toml())
    service = ServiceProcessHandle(["serve", "llm", "--config", str(config)], free_port(), workdir / "llm.log")
    try:
        service.wait_serving()
        echo(f"consolidated LLM service SERVING on {service.address} (health went {' -> '.join(service.seen_statuses)})")
        with grpc.insecure_channel(service.address) as channel:
            message = llm_pb2_grpc.MessageServiceStub(channel)
            memory = llm_pb2_grpc.MemoryServiceStub(channel)
            summary = llm_pb2_grpc.SummaryServiceStub(channel)
            pose = llm_pb2_grpc.PoseServiceStub(channel)
            for text in turns:
                echo(f"\n오로라에게 말하기 : {text}")
                check = message.CheckInput(llm_pb2.CheckInputRequest(text=text))
                if not check.ok:
                    echo(check.message)
                    continue
                reply = ""
                for chunk in message.Reply(llm_pb2.ReplyRequest(final_input=text)):
                    if chunk.HasField("done"):
                        reply = chunk.done.text
                        echo(f"👱‍♀️ 오로라 : {reply}   [{chunk.done.stats.attempts} attempts]")
                fact = memory.Extract(llm_pb2.ExtractRequest(final_input=text))
                echo(f"  memory : {fact.fact.text if fact.HasField('fact') else '(nothing to remember)'}")
                summ = summary.Summarize(llm_pb2.SummarizeRequest(final_input=text, reply=reply))
                echo(f"  summary: {summ.summary if summ.HasField('summary') else '(none)'}")
                face = pose.DecideExpression(llm_pb2.PoseRequest(reply=reply))
                echo(
                    f"  face   : 눈 {face.eyes_text}, 입 {face.mouth_text}, 고개 돌림 {face.pose_text} -> "
                    f"({face.expression.eyes:.2f}, {face.expression.mouth:.2f}, {face.expression.pose:.2f})"
                )
    finally:
        code = service.terminate()
        echo(f"\nservice stopped (exit {code}); log: {service.log_path}")
