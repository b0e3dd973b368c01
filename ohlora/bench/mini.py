"""Benchmarks of the offline `mini` preset: output quality on Korean turns, and turn timing.

mini-quality runs the four tasks in-process on the preset's LLM for 30 Korean turns written
for it (ohlora.bench.korean_prompts), requests submitted together so the engine batches them,
and scores what a user would notice: replies in Korean, expressions parsed without the neutral
fallback, memory answers in a valid form (one fact, or an explicit nothing).
mini-timing runs real turns through the gateway of a local stack on the preset.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ohlora.bench import SuiteResult
from ohlora.bench.korean_prompts import PROMPTS
from ohlora.chat import call_metadata
from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.task import Dialect, Finished, TaskSpec, complete_task
from ohlora.config import load_settings
from ohlora.presets import preset_config
from ohlora.runtime.device import choose_dtype
from services.llm_memory.task import EXTRACT_TASK
from services.llm_message.task import CHAT_EXAMPLES, FALLBACK_REPLY, REPLY_TASK
from services.llm_pose.task import POSE_TASK
from services.llm_summary.task import SUMMARY_TASK


# Clauses (6+ characters) of the reply task's few-shot answers.
EXAMPLE_CLAUSES = {c.strip() for _, answer in CHAT_EXAMPLES for c in re.split(r"[!?.,😊💪]", answer) if len(c.strip()) >= 6}


def hangul_share(text: str) -> float:
    """Share of Hangul among the letters of `text` (0 when it has none)."""
    letters = [ch for ch in text if ch.isalpha()]
    hangul = [ch for ch in letters if "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e"]
    return len(hangul) / len(letters) if letters else 0.0


def is_korean_reply(text: str) -> bool:
    return text != FALLBACK_REPLY and hangul_share(text) >= 0.6


def copies_an_example(reply: str) -> bool:
    """True when a reply reuses a clause of a few-shot example reply (the small model's main weakness)."""
    return any(clause in reply for clause in EXAMPLE_CLAUSES)


async def _run_all(engine: LLMEngine, spec: TaskSpec, calls: list[dict[str, str]]) -> list[Finished]:
    generator = engine.for_adapter(None)
    return list(await asyncio.gather(*(complete_task(generator, spec, Dialect.CHAT, **fields) for fields in calls)))


async def _quality(quick: bool) -> SuiteResult:
    settings = load_settings(preset_config("mini"))
    engine = LLMEngine.load(EngineConfig(base_model=settings.llm.base_model, dtype=settings.llm.dtype, device="cpu",
                                         max_batch_size=8, quantize=settings.llm.quantize))
    engine.start()
    prompts = PROMPTS[:10] if quick else PROMPTS
    texts = [p.text for p in prompts]
    started = time.perf_counter()
    replies = await _run_all(engine, REPLY_TASK, [{"final_input": t} for t in texts])
    memories = await _run_all(engine, EXTRACT_TASK, [{"final_input": t} for t in texts])
    reply_texts = [r.value for r in replies]
    summaries = await _run_all(engine, SUMMARY_TASK, [{"final_input": t, "reply": r} for t, r in zip(texts, reply_texts)])
    poses = await _run_all(engine, POSE_TASK, [{"reply": r} for r in reply_texts])
    elapsed = time.perf_counter() - started
    await engine.stop()

    rows: list[list[object]] = []
    for p, reply, memory, summary, pose in zip(prompts, replies, memories, summaries, poses):
        fact = memory.value.text if memory.value is not None else "-"
        words = pose.value
        rows.append([p.kind, p.text, reply.value, reply.stats.attempts,
                     "fallback" if memory.stats.fallback else fact,
                     summary.value or "-", "fallback" if pose.stats.fallback else f"{words.eyes}/{words.mouth}/{words.pose}"])
    n = len(prompts)
    korean = sum(is_korean_reply(r.value) for r in replies) / n
    pose_valid = sum(not p.stats.fallback for p in poses) / n
    memory_valid = sum(not m.stats.fallback for m in memories) / n
    with_fact = [m for p, m in zip(prompts, memories) if p.has_fact]
    without_fact = [m for p, m in zip(prompts, memories) if not p.has_fact]
    return SuiteResult(
        columns=["kind", "user", "reply", "tries", "memory", "summary", "expression"],
        rows=rows,
        results={
            "mini_korean_share": korean,
            "mini_pose_valid_share": pose_valid,
            "mini_memory_valid_share": memory_valid,
        },
        notes=[
            f"{n} Korean turns, Qwen2.5-Coder-0.5B-Instruct on CPU"
            f"{', int8 weights' if settings.llm.quantize else ''}, chat dialect, tasks batched; {elapsed:.0f} s in all",
            f"memory: a fact for {sum(m.value is not None for m in with_fact)}/{len(with_fact)} turns that state one, "
            f"nothing for {sum(m.value is None and not m.stats.fallback for m in without_fact)}/{len(without_fact)} that do not",
            f"replies reusing a clause of a few-shot example: {sum(copies_an_example(r.value) for r in replies)}/{n}",
            f"summaries: {sum(s.value is not None for s in summaries)}/{n}; replies that needed a retry: "
            f"{sum(r.stats.attempts > 1 for r in replies)}/{n}; reply fallbacks: {sum(r.stats.fallback for r in replies)}",
        ],
        dtype=settings.llm.dtype,
    )


def mini_quality(quick: bool) -> SuiteResult:
    return asyncio.run(_quality(quick))


# mini-timing runs the same turns on three stacks that differ only in the LLM's dtype.
TIMING_DTYPES = ("auto", "bfloat16", "float32")
TIMING_SEED = "1234"


def _timed_turn(stub: object, text: str, metadata: list[tuple[str, str]]) -> list[object]:
    """One real turn through a gateway: [reply, first text s, reply done s, expression s, turn settled s]."""
    from ohlora.v1 import gateway_pb2

    started = time.perf_counter()
    first = None
    reply = ""
    stages: dict[str, float] = {}
    for event in stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=metadata):  # type: ignore[attr-defined]
        kind = event.WhichOneof("kind")
        if kind == "reply_delta" and first is None:
            first = time.perf_counter() - started
        elif kind == "reply_final":
            reply = event.reply_final
        elif kind == "timing":
            stages[event.timing.stage] = event.timing.ms / 1000
    final = time.perf_counter() - started
    return [reply, first if first is not None else float("nan"), stages.get("reply", float("nan")),
            stages.get("expression", float("nan")), final]


def mini_timing(quick: bool) -> SuiteResult:
    """Real turns through the gateway on the mini preset: time to the first reply text, and to the turn's end.

    The same turns run on three stacks whose LLM differs only in dtype (auto, bf16 forced, fp32 forced), taking
    turns in a rotating order so a noisy moment of the machine hits all three alike; sampling is seeded. The
    figure `mini_dtype_auto_vs_best` says whether auto picked the faster dtype on this machine.
    """
    import grpc

    from ohlora.stack import LocalStack
    from ohlora.v1 import gateway_pb2_grpc

    config = preset_config("mini")
    turns = [p.text for p in PROMPTS[::6]][: 3 if quick else 5]
    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-"))
    stacks: dict[str, LocalStack] = {}
    rows: list[list[object]] = []
    try:
        for dtype in TIMING_DTYPES:
            stack = stacks[dtype] = LocalStack(root / dtype, config)
            stack.consolidated({"OHLORA_LLM__DTYPE": dtype, "OHLORA_LLM__SEED": TIMING_SEED})
        stubs = {d: gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(s.main.address)) for d, s in stacks.items()}
        metadata = call_metadata("bench", None)
        for i, text in enumerate(turns):
            order = TIMING_DTYPES[i % 3:] + TIMING_DTYPES[: i % 3]
            for dtype in order:
                rows.append([dtype, text, *_timed_turn(stubs[dtype], text, metadata)])
    finally:
        for stack in stacks.values():
            stack.close()
    rows.sort(key=lambda r: TIMING_DTYPES.index(str(r[0])))
    turn_s = {d: statistics.median(float(r[6]) for r in rows if r[0] == d) for d in TIMING_DTYPES}
    firsts = [float(r[3]) for r in rows if r[0] == "auto" and r[3] == r[3]]
    auto = choose_dtype("auto", torch.device("cpu"))
    best = min(turn_s["bfloat16"], turn_s["float32"])
    return SuiteResult(
        columns=["dtype", "user", "reply", "first text s", "reply done s", "expression s", "turn s"],
        rows=rows,
        results={"mini_first_token_s": statistics.median(firsts) if firsts else float("nan"),
                 "mini_turn_s": turn_s["auto"],
                 "mini_turn_s_bf16": turn_s["bfloat16"],
                 "mini_turn_s_fp32": turn_s["float32"],
                 "mini_dtype_auto_vs_best": turn_s["auto"] / best},
        notes=["median over turns; one consolidated LLM process for the four tasks (as `ohlora up`), sketch face, "
               "this CPU; a turn ends when the memory and summary are settled (the reply and expression come earlier)",
               f"three stacks, same turns in rotating order, sampling seeded ({TIMING_SEED}); auto chose "
               f"{auto.name} here ({auto.reason}); median turn auto {turn_s['auto']:.2f} s, bf16 "
               f"{turn_s['bfloat16']:.2f} s, fp32 {turn_s['float32']:.2f} s"],
        dtype="auto",
    )
