"""Five-turn Korean conversations through a real local stack, printed turn by turn for a person to read.

    python scripts/conversations.py                    # the mini preset as shipped, seeded
    python scripts/conversations.py --preset mini-few-shot --seed 7 --json out.json

Why: the benchmarks score single turns and two-turn memory scenarios; what a user meets is a conversation, where
each turn carries the last reply's summary or a recalled memory (the final input) and a memory written in one turn
can be replaced in another. The figures cannot say whether she still makes sense on turn four; reading this can.
It found the summary echo and the invented numbers in facts (docs/training.md, 2026-12-03). The stack is
`ohlora up`'s consolidated layout (gateway, Redis, one LLM process for the four tasks, the embedder, sketch face).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import grpc

from ohlora.chat import converse
from ohlora.presets import preset_config
from ohlora.stack import LocalStack
from ohlora.v1 import gateway_pb2_grpc

CONVERSATIONS = (
    ("로라야 안녕! 오늘 하루 어땠어?", "나는 오늘 회사에서 너무 바빴어", "점심도 제대로 못 먹었어 ㅠㅠ", "저녁엔 뭐 먹을까?",
     "고마워 로라야"),
    ("나 다음 주에 부산 여행 가", "부산 가면 어디 가 볼까?", "바다 보는 거 좋아해?", "로라야 좋아하는 계절이 뭐야?",
     "나는 가을이 제일 좋아"),
    ("요즘 잠이 잘 안 와", "밤에 계속 핸드폰 보게 돼", "너는 잠 잘 자?", "내일은 일찍 자 볼게", "잘 자 로라야"),
    ("내 생일은 3월 14일이야", "로라야 너 생일은 언제야?", "선물로 뭐 받고 싶어?", "나 요즘 기타 배우고 있어",
     "내 생일 기억나?"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--seed", default="1234", help="llm.seed of the stack (sampling repeats run to run)")
    parser.add_argument("--json", type=Path, help="also write every turn here")
    args = parser.parse_args()
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="ohlora-conversations-")), preset_config(args.preset))
    turns: list[dict[str, object]] = []
    try:
        stack.consolidated({"OHLORA_LLM__SEED": args.seed})
        stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(stack.main.address))
        for number, conversation in enumerate(CONVERSATIONS):
            print(f"== conversation {number + 1}")
            for turn in converse(stub, f"conversation-{number}", list(conversation)):
                print(f"  in   {turn.final_input}\n  out  {turn.reply.strip()}   [memory written: {turn.memory_written or '-'}]")
                turns.append({"conversation": number + 1, "final_input": turn.final_input, "reply": turn.reply,
                              "memory_written": turn.memory_written})
    finally:
        stack.close()
    if args.json:
        args.json.write_text(json.dumps(turns, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
