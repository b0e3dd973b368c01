"""Benchmarks of the offline `mini` preset: output quality on Korean turns, and turn timing.

mini-quality runs the four tasks in-process on the preset's LLM for the persona dataset's valid split
(never trained on), requests submitted together so the engine batches them, and scores what a user
would notice: replies in Korean and in 반말, expressions parsed without the neutral fallback, a fact
extracted where the turn states one and nothing where it does not; then two-turn memory scenarios
through a real stack. `--variant few-shot` scores the bare base on few-shot prompts instead.
mini-timing runs real turns through the gateway of local stacks, two side by side at a time: the preset as shipped
against the few-shot variant, then the preset in bf16 against fp32.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ohlora.bench import SuiteResult
from ohlora.bench.korean_prompts import PROMPTS
from ohlora.chat import call_metadata, converse
from ohlora.config import Settings, load_settings
from ohlora.llm.engine import AdapterGenerator, EngineConfig, LLMEngine
from ohlora.llm.persona import MEMORY_KEYS
from ohlora.llm.quantize import KERNEL_MAX_ROWS
from ohlora.llm.task import Finished, complete_task
from ohlora.presets import preset_config
from ohlora.runtime.device import choose_dtype
from ohlora.train.dataset import (PERSONA_CSV, SCENARIOS_JSON, UNSEEN_SCENARIOS_JSON, PersonaRow, load_rows,
                                  task_spec)
from services.llm_message.task import CHAT_EXAMPLES, FALLBACK_REPLY


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


# 존댓말 sentence endings (해요체, 하십시오체); Oh-LoRA speaks 반말 to her friend (docs/training.md).
FORMAL_ENDING = re.compile(r"(요|니다|니까|세요|십시오|시죠|죠)$")
SENTENCE_TAIL = re.compile(r"[^가-힣A-Za-z0-9]+$")  # emoji, ㅋㅋ/ㅎㅎ/ㅠㅠ, punctuation, spaces after the last word


def is_informal(reply: str) -> bool:
    """True when no sentence of the reply ends in a polite (존댓말) ending."""
    for sentence in re.split(r"(?<=[.!?~])\s+|\n", reply):
        core = SENTENCE_TAIL.sub("", sentence.strip())
        if core and FORMAL_ENDING.search(core):
            return False
    return True


VARIANTS = {"tuned": "mini", "few-shot": "mini-few-shot"}
EVAL_SEED = 1234
# The two-turn scenario sets (names that are valid user ids too), and the figure each gives.
SCENARIO_SETS = {"scenarios": SCENARIOS_JSON, "unseen-scenarios": UNSEEN_SCENARIOS_JSON}
SCENARIO_RESULTS = {"scenarios": "mini_scenario_recall_share", "unseen-scenarios": "mini_unseen_scenario_recall_share"}


def bench_variant() -> str:
    """`ohlora bench mini-* --variant`: the shipped adapter (tuned) or the bare base on few-shot prompts."""
    variant = os.environ.get("OHLORA_BENCH_VARIANT", "tuned")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use {', '.join(VARIANTS)}")
    return variant


def load_engine(settings: Settings, tasks: list[str]) -> LLMEngine:
    """The engine of the LLM process hosting `tasks` (one base), as `ohlora up` configures it."""
    llm = settings.llm
    base_adapter, adapters = llm.adapters_for(tasks)
    # Under "int8-decode" a batch of more rows than the int8 kernel takes would run on the float weights: batches of
    # that many rows measure what a user's turn (at most four rows) gets.
    rows = KERNEL_MAX_ROWS if llm.quantize == "int8-decode" else 8
    return LLMEngine.load(EngineConfig(base_model=llm.base_for(tasks), adapters=adapters, dtype=llm.dtype, device="cpu",
                                       max_batch_size=rows, max_queue=4096, quantize=llm.quantize, seed=EVAL_SEED,
                                       base_adapter=base_adapter, output_vocabulary=llm.output_vocabulary))


class TaskEngines:
    """One engine per base model of the preset's tasks, in this process (`ohlora up` runs one process per base)."""

    def __init__(self, settings: Settings) -> None:
        self.by_task: dict[str, LLMEngine] = {}
        for tasks in settings.llm.process_groups():
            engine = load_engine(settings, tasks)
            self.by_task.update({task: engine for task in tasks})
        self.engines = list({id(e): e for e in self.by_task.values()}.values())

    def start(self) -> None:
        for engine in self.engines:
            engine.start()

    async def stop(self) -> None:
        for engine in self.engines:
            await engine.stop()

    def generator(self, task: str) -> AdapterGenerator:
        """The task's engine bound to its own adapter, or to the (possibly merged) base when it has none."""
        engine = self.by_task[task]
        return engine.for_adapter(task if engine.has_adapter(task) else None)


async def _run_all(engines: TaskEngines, settings: Settings, task: str, calls: list[dict[str, str]]) -> list[Finished]:
    generator = engines.generator(task)
    spec, dialect = task_spec(task), settings.llm.dialect_of(task)
    return list(await asyncio.gather(*(complete_task(generator, spec, dialect, **fields) for fields in calls)))


def eval_rows(quick: bool) -> list[PersonaRow]:
    """The persona dataset's valid split (never trained on); --quick takes an even sample of 40."""
    valid = [r for r in load_rows(PERSONA_CSV) if r.data_type == "valid"]
    return valid[:: max(1, len(valid) // 40)][:40] if quick else valid


async def _quality(quick: bool) -> tuple[SuiteResult, float]:
    variant = bench_variant()
    settings = load_settings(preset_config(VARIANTS[variant]))
    engines = TaskEngines(settings)
    engines.start()
    rows = eval_rows(quick)
    inputs = [{"final_input": r.input_data} for r in rows]
    started = time.perf_counter()
    replies, memories = await asyncio.gather(_run_all(engines, settings, "message", inputs),
                                             _run_all(engines, settings, "memory", inputs))
    reply_texts = [r.value for r in replies]
    summaries, poses = await asyncio.gather(
        _run_all(engines, settings, "summary", [{"final_input": r.input_data, "reply": t} for r, t in zip(rows, reply_texts)]),
        _run_all(engines, settings, "pose", [{"reply": t} for t in reply_texts]))
    elapsed = time.perf_counter() - started
    await engines.stop()

    table: list[list[object]] = []
    for row, reply, memory, summary, pose in zip(rows, replies, memories, summaries, poses):
        fact = memory.value.text if memory.value is not None else "-"
        words = pose.value
        table.append([row.input_data, reply.value, reply.stats.attempts, "fallback" if memory.stats.fallback else fact,
                      row.memory or "-", summary.value or "-",
                      "fallback" if pose.stats.fallback else f"{words.eyes}/{words.mouth}/{words.pose}"])
    n = len(rows)
    with_fact = [m for r, m in zip(rows, memories) if r.memory]
    without_fact = [m for r, m in zip(rows, memories) if not r.memory]
    results = {
        "mini_korean_share": sum(is_korean_reply(r.value) for r in replies) / n,
        "mini_informal_share": sum(is_korean_reply(r.value) and is_informal(r.value) for r in replies) / n,
        "mini_pose_valid_share": sum(not p.stats.fallback for p in poses) / n,
        "mini_memory_valid_share": sum(not m.stats.fallback for m in memories) / n,
        "mini_fact_recall_share": sum(m.value is not None and m.value.key in MEMORY_KEYS for m in with_fact) / len(with_fact),
        "mini_no_fact_share": sum(m.value is None and not m.stats.fallback for m in without_fact) / len(without_fact),
    }
    notes = [
        f"{variant}: {n} turns of the persona dataset's valid split, on CPU: "
        + "; ".join(f"{', '.join(tasks)} on {Path(settings.llm.base_for(tasks)).name}"
                    for tasks in settings.llm.process_groups()) +
        f"{f', {settings.llm.quantize} weights' if settings.llm.quantize else ''}, {settings.llm.dialect.value} dialect"
        f"{', adapters' if any(e.aliases for e in engines.engines) else ', no adapter'}, tasks batched; {elapsed:.0f} s in all",
        f"memory: a fact with a key from the vocabulary for {sum(m.value is not None and m.value.key in MEMORY_KEYS for m in with_fact)}"
        f"/{len(with_fact)} turns that state one (same key as the dataset: "
        f"{sum(m.value is not None and f'[{m.value.key}:' in r.memory for r, m in zip([r for r in rows if r.memory], with_fact))}), "
        f"nothing for {sum(m.value is None and not m.stats.fallback for m in without_fact)}/{len(without_fact)} that do not",
        f"replies reusing a clause of a few-shot example: {sum(copies_an_example(r.value) for r in replies)}/{n}; "
        f"replies that needed a retry: {sum(r.stats.attempts > 1 for r in replies)}/{n}; reply fallbacks: "
        f"{sum(r.stats.fallback for r in replies)}; summaries: {sum(s.value is not None for s in summaries)}/{n}",
    ]
    return SuiteResult(columns=["input", "reply", "tries", "memory", "dataset memory", "summary", "expression"],
                       rows=table, results=results, notes=notes, dtype=settings.llm.dtype), elapsed


def scenario_recall(quick: bool) -> dict[str, list[list[object]]]:
    """Two-turn scenarios through a real stack (gateway, Redis, the LLM and embedder services) on the variant.

    A scenario passes when the fact written in turn 1 is the memory in front of turn 2's final input and its
    value is in turn 2's reply: extraction, storage, recall and use, as the user experiences them. Both sets run on
    one stack: `scenarios.json` (held out by sentence; its facts also appear in train rows) and
    `scenarios-unseen.json` (held out by fact: no value of it appears in any data the adapters were trained on).
    """
    import grpc

    from ohlora.stack import LocalStack
    from ohlora.v1 import gateway_pb2_grpc

    sets = {name: json.loads(path.read_text())[: 5 if quick else None] for name, path in SCENARIO_SETS.items()}
    config = preset_config(VARIANTS[bench_variant()])
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="ohlora-bench-")), config)
    results: dict[str, list[list[object]]] = {}
    try:
        stack.consolidated({"OHLORA_LLM__SEED": str(EVAL_SEED)})
        stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(stack.main.address))
        for name, scenarios in sets.items():
            rows = results.setdefault(name, [])
            for number, scenario in enumerate(scenarios):
                first, second = converse(stub, f"{name}-{number}", [scenario["first"], scenario["second"]])
                fact = first.memory_written
                passed = bool(fact) and second.final_input.startswith(fact) and scenario["value"] in second.reply
                rows.append([scenario["first"], fact or "-", scenario["second"], second.final_input, second.reply,
                             passed])
    finally:
        stack.close()
    return results


def mini_quality(quick: bool) -> SuiteResult:
    """Format shares and the persona figures on the valid split, then the two-turn memory scenarios."""
    result, _ = asyncio.run(_quality(quick))
    for name, rows in scenario_recall(quick).items():
        passed = sum(bool(r[-1]) for r in rows)
        result.results[SCENARIO_RESULTS[name]] = passed / len(rows)
        recalled = sum(r[1] != "-" and str(r[3]).startswith(str(r[1])) for r in rows)
        stored = sum(r[1] != "-" for r in rows)
        result.notes.append(
            f"two-turn scenarios ({name}) through `ohlora up`'s stack: {passed}/{len(rows)} recalled and used "
            f"(stored {stored}, recalled {recalled}); "
            + "; ".join(f"{r[0]} -> {r[1]} | {r[2]} -> {r[4]}" for r in rows[:6]))
        result.details[name] = [dict(zip(("first", "fact", "second", "final_input", "reply", "passed"), r))
                                for r in rows]
    return result


# mini-timing runs the same turns on two pairs of stacks, each pair side by side: the shipped preset (auto) against
# the few-shot variant (what the fine-tuning saves), then the preset in bf16 forced against fp32 forced (whether auto
# chose the faster dtype). Four stacks at once no longer fit in 24 GiB since the reply's 1.5B base (7 GB in fp32).
TIMING_PAIRS = (("auto", "few-shot"), ("bfloat16", "float32"))
TIMING_STACKS = tuple(name for pair in TIMING_PAIRS for name in pair)
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

    The same turns run on two pairs of stacks (TIMING_PAIRS): the shipped preset (adapters, short prompts) against
    the bare bases on few-shot prompts, both auto; then the preset in bf16 forced against fp32 forced. A pair's
    stacks take turns in alternating order so a noisy moment of the machine hits both alike; sampling is seeded.
    `mini_turn_ratio` says what the fine-tuning saves a turn; `mini_dtype_auto_vs_best` whether auto picks the
    faster dtype on this machine.
    """
    import grpc

    from ohlora.stack import LocalStack
    from ohlora.v1 import gateway_pb2_grpc

    turns = [p.text for p in PROMPTS[::6]][: 3 if quick else 5]
    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-"))
    metadata = call_metadata("bench", None)
    rows: list[list[object]] = []
    for pair in TIMING_PAIRS:
        stacks: dict[str, LocalStack] = {}
        try:
            for name in pair:
                stack = stacks[name] = LocalStack(root / name, preset_config("mini-few-shot" if name == "few-shot" else "mini"))
                dtype = name if name in ("bfloat16", "float32") else "auto"
                stack.consolidated({"OHLORA_LLM__DTYPE": dtype, "OHLORA_LLM__SEED": TIMING_SEED})
            stubs = {n: gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(s.main.address)) for n, s in stacks.items()}
            for i, text in enumerate(turns):
                for name in (pair if i % 2 == 0 else pair[::-1]):
                    rows.append([name, text, *_timed_turn(stubs[name], text, metadata)])
        finally:
            for stack in stacks.values():
                stack.close()
    rows.sort(key=lambda r: TIMING_STACKS.index(str(r[0])))
    turn_s = {d: statistics.median(float(r[6]) for r in rows if r[0] == d) for d in TIMING_STACKS}
    reply_s = {d: statistics.median(float(r[4]) for r in rows if r[0] == d) for d in TIMING_STACKS}
    firsts = [float(r[3]) for r in rows if r[0] == "auto" and r[3] == r[3]]
    auto = choose_dtype("auto", torch.device("cpu"))
    best = min(turn_s["bfloat16"], turn_s["float32"])
    chosen = "bfloat16" if auto.dtype == torch.bfloat16 else "float32"
    return SuiteResult(
        columns=["stack", "user", "reply", "first text s", "reply done s", "expression s", "turn s"],
        rows=rows,
        results={"mini_first_token_s": statistics.median(firsts) if firsts else float("nan"),
                 "mini_turn_s": turn_s["auto"],
                 "mini_turn_s_bf16": turn_s["bfloat16"],
                 "mini_turn_s_fp32": turn_s["float32"],
                 "mini_dtype_auto_vs_best": turn_s[chosen] / best,
                 "mini_turn_s_few_shot": turn_s["few-shot"],
                 "mini_turn_ratio": turn_s["auto"] / turn_s["few-shot"],
                 "mini_reply_ratio": reply_s["auto"] / reply_s["few-shot"]},
        notes=["median over turns; LLM processes as `ohlora up` runs them (one per base model), sketch face, "
               "this CPU; a turn ends when the memory and summary are settled (the reply and expression come earlier)",
               f"two pairs of stacks, each pair taking the same turns in alternating order, sampling seeded "
               f"({TIMING_SEED}); auto chose {auto.name} here ({auto.reason}); median turn bf16 forced "
               f"{turn_s['bfloat16']:.2f} s, fp32 forced {turn_s['float32']:.2f} s (mini_dtype_auto_vs_best: the "
               f"dtype auto chooses, forced, against the faster of the two)",
               f"fine-tuned (auto) vs few-shot (auto): median turn {turn_s['auto']:.2f} s vs {turn_s['few-shot']:.2f} s, "
               f"reply done {reply_s['auto']:.2f} s vs {reply_s['few-shot']:.2f} s"],
        dtype="auto",
    )


def mini_expression(quick: bool) -> SuiteResult:
    """The expression task on the mini preset as shipped: sampled token by token vs from its answer set, side by side.

    With the answer set (ohlora.llm.answers) the engine samples only the three choices and writes the rest of
    "(눈 X, 입 Y, 고개 돌림 Z)" in the passes that choose them. Each expression runs alone, as the service runs it
    after a reply, attempts and fallback included; the two ways take turns, in alternating order, on the persona
    dataset's valid replies, seeded alike.
    """
    return asyncio.run(_expression(quick))


async def _expression(quick: bool) -> SuiteResult:
    from dataclasses import replace

    from services.llm_pose.task import POSE_TASK

    settings = load_settings(preset_config("mini"))
    dialect = settings.llm.dialect_of("pose")
    engine = load_engine(settings, next(tasks for tasks in settings.llm.process_groups() if "pose" in tasks))
    engine.start()
    generator = engine.for_adapter("pose" if engine.has_adapter("pose") else None)
    chosen = POSE_TASK.settings_for(dialect)
    free = replace(POSE_TASK, settings={**POSE_TASK.settings, dialect: replace(chosen, answers=())})
    ways = {"token by token": free, "answer set": POSE_TASK}
    replies = [r.output_message for r in eval_rows(True)][: 8 if quick else 24]
    for spec in ways.values():  # the first generation of each shape pays one-off costs
        await complete_task(generator, spec, dialect, reply=replies[0])
    rows: list[list[object]] = []
    for i, reply in enumerate(replies):
        for name, spec in (list(ways.items()) if i % 2 == 0 else reversed(ways.items())):
            started = time.perf_counter()
            result = await complete_task(generator, spec, dialect, reply=reply)
            words = result.value
            rows.append([reply, name, time.perf_counter() - started, result.stats.attempts, result.stats.generated_tokens,
                         "fallback" if result.stats.fallback else f"{words.eyes}/{words.mouth}/{words.pose}"])
    await engine.stop()
    seconds = {name: statistics.median(float(r[2]) for r in rows if r[1] == name) for name in ways}
    valid = {name: sum(r[5] != "fallback" for r in rows if r[1] == name) / len(replies) for name in ways}
    same = sum(a[5] == b[5] for a, b in zip(rows[::2], rows[1::2]))
    return SuiteResult(
        columns=["reply", "decoding", "seconds", "attempts", "tokens", "expression"],
        rows=rows,
        results={"expression_answer_set_speedup": seconds["token by token"] / seconds["answer set"],
                 "expression_valid_share_token_by_token": valid["token by token"],
                 "expression_valid_share_answer_set": valid["answer set"]},
        notes=[f"mini preset as shipped ({dialect.value} dialect), in-process, one expression at a time, seeded; "
               f"{len(replies)} replies of the valid split, each both ways in alternating order; median "
               f"{seconds['token by token']:.2f} s token by token vs {seconds['answer set']:.2f} s from the answer set",
               f"the same words both ways for {same}/{len(replies)} replies (each way samples its own choices)"],
        dtype=settings.llm.dtype,
    )
