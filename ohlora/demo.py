"""`ohlora demo`: the whole pipeline on models that need no download, one process per service.

Takes a preset's config (by default the offline `mini` preset, prepared once from PyPI
wheels), starts Redis, the LLM services, the face service and the gateway as real
processes, runs Korean turns through the gateway like a client would, prints what the
gateway recorded, and writes a face frame. `ohlora up` is the interactive version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc

from ohlora.chat import call_metadata
from ohlora.stack import LocalStack
from ohlora.v1 import face_pb2, gateway_pb2, gateway_pb2_grpc

DEMO_TURNS = ["나 내일 시험이야", "로라야 나 떨려"]


def run_demo(config: Path, turns: list[str], echo=print) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ohlora-demo-"))
    stack = LocalStack(workdir, config)
    try:
        echo("starting Redis, the LLM services, the face service and the gateway ...")
        stack.standard()
        echo(f"gateway SERVING on {stack.main.address}; logs in {workdir}")
        stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(stack.main.address))
        md = call_metadata("demo", None)
        face = stub.ChooseFace(gateway_pb2.ChooseFaceRequest(), metadata=md)
        echo(f"Oh-LoRA face vector selected randomly : case No. {face.face_id}")
        for text in turns:
            echo(f"\n오로라에게 말하기 (Ctrl+C to finish) : {text}")
            for event in stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=md):
                kind = event.WhichOneof("kind")
                if kind == "reply_final":
                    echo(f"👱‍♀️ 오로라 : {event.reply_final}")
                elif kind == "expression":
                    e = event.expression
                    echo(f"  face : eyes {e.eyes:+.2f}, mouth {e.mouth:+.2f}, head turn {e.pose:+.2f}")
                elif kind in ("warning", "error"):
                    echo(f"  {kind} : {getattr(event, kind) if kind == 'warning' else event.error.message}")
        echo("")
        for turn in stub.ListTurns(gateway_pb2.ListTurnsRequest(limit=len(turns)), metadata=md).turns:
            echo(f"turn log: final input {turn.final_input!r} | memory written {turn.memory_written or '-'} "
                 f"| summary {turn.summary or '-'}")
        watch = stub.Watch(gateway_pb2.WatchRequest(fps=10, format=face_pb2.IMAGE_FORMAT_PNG), metadata=md)
        frame = next(iter(watch))
        watch.cancel()
        out = workdir / "face.png"
        out.write_bytes(frame.image)
        echo(f"a face frame: {out}")
    finally:
        stack.close()
