"""LLM benchmarks: batching throughput and consolidated-mode memory."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from ohlora.bench import SuiteResult, bench_dtype
from ohlora.bench.models import smollm2_135m
from ohlora.client import ServiceProcessHandle, free_port, wait_all_serving
from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.task import ChatPrompt, GenerationSettings
from ohlora.runtime.cpu_memory import keep_freed_memory
from ohlora.runtime.device import resolve_dtype
from ohlora.v1 import llm_pb2, llm_pb2_grpc

TOPICS = ["a lighthouse keeper", "a lost robot", "a dragon who bakes", "two rival chess clubs",
          "a city under the sea", "a time-travelling cat", "the first day at a new school", "a mountain village"]
CONCURRENCY = 8


def _prompt(topic: str) -> ChatPrompt:
    return ChatPrompt(system="You are a storyteller. Answer at length.", user=f"Write a long story about {topic}.")


async def _generate(engine: LLMEngine, topic: str, settings: GenerationSettings, adapter: str | None = None) -> int:
    tokens = 0
    async for update in engine.for_adapter(adapter).generate(_prompt(topic), settings):
        tokens = update.new_tokens
    return tokens


async def _batching(quick: bool) -> SuiteResult:
    keep_freed_memory()  # as `ohlora serve` does on a CPU, before the engine's thread starts
    model = smollm2_135m()
    dtype = bench_dtype()
    engine = LLMEngine.load(EngineConfig(base_model=str(model), dtype=dtype, device="cpu", max_batch_size=CONCURRENCY))
    engine.start()
    settings = GenerationSettings(temperature=0.6, max_new_tokens=32 if quick else 64)
    # Warm both shapes: the first generation of a process, and the first batch, pay one-off costs
    # (seconds on a CPU) that would otherwise land in the first round.
    warm = GenerationSettings(temperature=0.6, max_new_tokens=4)
    await _generate(engine, "warm-up", warm)
    await asyncio.gather(*(_generate(engine, t, warm) for t in TOPICS[:CONCURRENCY]))
    rounds = 3
    rows: list[list[object]] = []
    ratios = []
    for r in range(rounds):
        started = time.perf_counter()
        single_tokens = await _generate(engine, TOPICS[r % len(TOPICS)], settings)
        single_s = time.perf_counter() - started
        engine.recent_batches.clear()
        started = time.perf_counter()
        counts = await asyncio.gather(*(_generate(engine, t, settings) for t in TOPICS[:CONCURRENCY]))
        batch_s = time.perf_counter() - started
        single_tps, batch_tps = single_tokens / single_s, sum(counts) / batch_s
        ratios.append(batch_tps / single_tps)
        rows.append([r + 1, "1 request", single_tokens, single_s, single_tps, 1, 1.0])
        rows.append([r + 1, f"{CONCURRENCY} concurrent", sum(counts), batch_s, batch_tps,
                     max(n for _, n in engine.recent_batches), batch_tps / single_tps])
    await engine.stop()
    speedup = statistics.median(ratios)
    return SuiteResult(
        columns=["round", "load", "tokens", "seconds", "tokens/s", "largest batch", "vs single"],
        rows=rows,
        results={"batching_speedup": speedup},
        notes=[f"SmolLM2-135M-Instruct on CPU, engine in-process, chat prompts, T=0.6, "
               f"max {settings.max_new_tokens} new tokens; median of {rounds} alternating rounds after a warm-up"],
        dtype=dtype,
    )


def llm_batching(quick: bool) -> SuiteResult:
    return asyncio.run(_batching(quick))


async def _mixed_adapters(quick: bool) -> SuiteResult:
    """Four requests for four LoRA adapters: sent together (one mixed batch) vs one after another."""
    keep_freed_memory()  # as `ohlora serve` does on a CPU, before the engine's thread starts
    tasks = ["message", "memory", "summary", "pose"]
    base = smollm2_135m()
    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-"))
    dtype = bench_dtype()
    adapters = _build_adapters(base, root, tasks)
    engine = LLMEngine.load(EngineConfig(base_model=str(base), adapters={t: str(p) for t, p in adapters.items()},
                                         dtype=dtype, device="cpu", max_batch_size=8))
    engine.start()
    # Greedy, so both ways generate the same tokens (a mixed batch gives each row its adapter's output).
    settings = GenerationSettings(temperature=0.0, max_new_tokens=32 if quick else 64)
    jobs = list(zip(tasks, TOPICS))

    warm = GenerationSettings(temperature=0.0, max_new_tokens=4)
    await asyncio.gather(*(_generate(engine, x, warm, t) for t, x in jobs))
    for t, x in jobs:
        await _generate(engine, x, warm, t)
    rows: list[list[object]] = []
    ratios = []
    for r in range(3):
        started = time.perf_counter()
        alone = [await _generate(engine, x, settings, t) for t, x in jobs]
        alone_s = time.perf_counter() - started
        engine.recent_batches.clear()
        started = time.perf_counter()
        together = await asyncio.gather(*(_generate(engine, x, settings, t) for t, x in jobs))
        together_s = time.perf_counter() - started
        batches = list(engine.recent_batches)
        ratios.append(alone_s / together_s)
        rows.append([r + 1, "one after another", sum(alone), alone_s, 4, 1.0])
        rows.append([r + 1, "together", sum(together), together_s, max(n for _, n in batches), alone_s / together_s])
    await engine.stop()
    return SuiteResult(
        columns=["round", "four requests", "tokens", "seconds", "largest batch", "speedup"],
        rows=rows,
        results={"mixed_adapter_speedup": statistics.median(ratios)},
        notes=[f"SmolLM2-135M-Instruct base with four random LoRA adapters (r=16 on q/k/v/o), engine in-process, "
               f"one request per adapter, greedy, {settings.max_new_tokens} new tokens at most; median of 3 rounds "
               f"after a warm-up; the together case ran as batches {batches}"],
        dtype=dtype,
    )


def mixed_adapters(quick: bool) -> SuiteResult:
    return asyncio.run(_mixed_adapters(quick))


class _TokenClock:
    """A generate() streamer that only notes when each new token arrived (the first put() is the prompt)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self._prompt_seen = False

    def put(self, value: object) -> None:
        if self._prompt_seen:
            self.arrivals.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass

    def decode_rate(self) -> float:
        """Tokens a second after the first: decoding alone, the prompt's prefill left out."""
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])


def _decode_side_by_side(quick: bool, variants: dict[str, Callable[[Any, Any], object]], prompt: ChatPrompt,
                         result: str, note: str) -> SuiteResult:
    """The mini preset's LLM loaded once per variant (each prepared by its function of (model, tokenizer)), all kept
    loaded and taking turns: decode tok/s timed from the first new token to the last (the prompt's prefill not in
    it), and a 300-token prefill on its own as context. `result` is the median over 3 rounds of the second variant's
    decode rate over the first's; `note` describes the variants after the common part of the suite's note."""
    import torch

    from ohlora.config import load_settings
    from ohlora.presets import preset_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    keep_freed_memory()
    base = load_settings(preset_config("mini")).llm.base_model
    dtype = bench_dtype()
    torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    models = {}
    for name, prepare in variants.items():
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype).eval()
        prepare(model, tokenizer)
        models[name] = model
    text = tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    long_ids = torch.randint(100, 20000, (1, 300), generator=torch.Generator().manual_seed(0))
    new_tokens = 16 if quick else 48

    def decode(model: torch.nn.Module) -> tuple[float, str]:
        clock = _TokenClock()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, streamer=clock)
        return clock.decode_rate(), tokenizer.decode(out[0, ids.shape[1]:])

    def prefill(model: torch.nn.Module) -> float:
        started = time.perf_counter()
        model(long_ids)
        return time.perf_counter() - started

    first, second = variants
    rows: list[list[object]] = []
    ratios = []
    with torch.inference_mode():
        for model in models.values():  # the first generation of each pays one-off costs
            model.generate(ids, max_new_tokens=2, do_sample=False)
        for r in range(3):
            speed = {}
            for name, model in (models.items() if r % 2 == 0 else reversed(models.items())):
                speed[name], sample = decode(model)
                rows.append([r + 1, name, speed[name], prefill(model), sample[:40]])
            ratios.append(speed[second] / speed[first])
    rows.sort(key=lambda row: (row[0], row[1] != first))
    return SuiteResult(
        columns=["round", "variant", "decode tok/s", "prefill 300 tokens s", "greedy text"],
        rows=rows,
        results={result: statistics.median(ratios)},
        notes=[f"Qwen2.5-Coder-0.5B-Instruct (the mini preset's LLM, no adapter) in-process, one row, greedy, {new_tokens} "
               "new tokens; decode tok/s from the first new token to the last (the prompt's prefill not in it); median "
               f"of 3 rounds, order alternating; {note}"],
        dtype=dtype,
    )


def llm_int8(quick: bool) -> SuiteResult:
    """Decode speed of the mini preset's LLM with its weights as loaded vs weight-only int8, side by side.

    Decoding one row is memory-bound (every weight read once a step), which is what int8 weights cut; prefill
    (compute-bound, and where int8 converts its weights) is timed apart.
    """
    from ohlora.llm.quantize import quantize_weights

    return _decode_side_by_side(
        quick, {"plain": lambda model, tokenizer: None, "int8": lambda model, tokenizer: quantize_weights(model, "int8")},
        _prompt(TOPICS[0]), "int8_decode_speedup",
        "int8 = every Linear as ohlora.llm.quantize.Int8Linear (torch's _weight_int8pack_mm for few rows)")


def llm_vocabulary(quick: bool) -> SuiteResult:
    """Decode speed of the mini preset's LLM with its whole output layer vs `llm.output_vocabulary = "korean"`.

    The output layer is about a quarter of the weights a decoded token reads; the Korean one computes 40,345 of its
    151,936 rows (ohlora.llm.vocabulary). Greedy text must be the same when the full model's tokens are all kept.
    """
    from ohlora.llm.vocabulary import restrict_output
    from services.llm_message.task import TUNED_SYSTEM

    return _decode_side_by_side(
        quick, {"full": lambda model, tokenizer: None,
                "korean": lambda model, tokenizer: restrict_output(model, tokenizer, "korean")},
        ChatPrompt(system=TUNED_SYSTEM, user="로라야 오늘 뭐 했어? 나는 친구랑 한강에서 자전거 탔어"),
        "korean_vocabulary_decode_speedup",
        "after a Korean chat turn; prefill column: the logits of all 300 positions (generate() computes only the "
        "last one's)")


def _build_adapters(base: Path, root: Path, tasks: list[str]) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for i, task in enumerate(tasks):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", task_type="CAUSAL_LM",
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        get_peft_model(model, config).save_pretrained(root / f"adapter-{task}")
        adapters[task] = root / f"adapter-{task}"
    return adapters


def consolidated(quick: bool) -> SuiteResult:
    from ohlora.tiny import build_embedder

    tasks = ["message", "memory", "summary", "pose"]
    base = smollm2_135m()
    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-"))
    adapters = _build_adapters(base, root, tasks)
    embedder = build_embedder(root / "embedder")
    config = root / "ohlora.toml"
    lines = ["[llm]", f'base_model = "{base}"', 'dialect = "chat"', f'dtype = "{bench_dtype()}"', 'device = "cpu"',
             "[embedder]", f'model = "{embedder}"', 'device = "cpu"']
    for task, path in adapters.items():
        lines += [f"[llm.tasks.{task}]", f'adapter = "{path}"']
    config.write_text("\n".join(lines) + "\n")

    def measure(args: list[str], name: str) -> tuple[int, float]:
        handle = ServiceProcessHandle([*args, "--config", str(config)], free_port(), root / f"{name}.log")
        try:
            started = time.perf_counter()
            wait_all_serving([handle])
            ready_s = time.perf_counter() - started
            with grpc.insecure_channel(handle.address) as channel:
                if quick:  # warm-up already ran one generation per adapter; skip the slow calls
                    return handle.rss_bytes, ready_s
                list(llm_pb2_grpc.MessageServiceStub(channel).Reply(llm_pb2.ReplyRequest(final_input="로라야 안녕"), timeout=300))
                if "llm" in args:
                    llm_pb2_grpc.MemoryServiceStub(channel).Extract(llm_pb2.ExtractRequest(final_input="나 내일 시험이야"))
                    llm_pb2_grpc.MemoryServiceStub(channel).Embed(llm_pb2.EmbedRequest(texts=["안녕"]))
                    llm_pb2_grpc.SummaryServiceStub(channel).Summarize(llm_pb2.SummarizeRequest(final_input="안녕", reply=" 안녕!"))
                    llm_pb2_grpc.PoseServiceStub(channel).DecideExpression(llm_pb2.PoseRequest(reply=" 안녕!"))
            return handle.rss_bytes, ready_s
        finally:
            handle.terminate()

    single_rss, single_ready = measure(["serve", "llm_message"], "single")
    consolidated_rss, consolidated_ready = measure(["serve", "llm", "--tasks", ",".join(tasks)], "consolidated")
    mib = 1024 * 1024
    ratio = consolidated_rss / single_rss
    return SuiteResult(
        columns=["process", "tasks", "adapters", "RSS MiB", "ready s"],
        rows=[
            ["ohlora serve llm_message", 1, 1, single_rss / mib, single_ready],
            ["ohlora serve llm (consolidated)", 4, 4, consolidated_rss / mib, consolidated_ready],
            ["four single-task processes (sum)", 4, 4, 4 * single_rss / mib, float("nan")],
        ],
        results={"consolidated_rss_ratio": ratio},
        dtype=bench_dtype(),
        notes=["SmolLM2-135M-Instruct base, LoRA r=16 on q/k/v/o per task; the memory task also loads "
               "the tiny sentence embedder. RSS read after warm-up (one generation per adapter)"
               + ("." if quick else " and after each task answered one call.")],
    )
