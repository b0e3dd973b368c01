"""GPU figures for the LLM engine and the face generator (issues #2 and #3), in one prepared run.

    python scripts/gpu_figures.py            # on a CUDA machine: Polyglot-Ko-1.3B-shaped model, bf16
    python scripts/gpu_figures.py --tiny     # smoke test of the script itself on a CPU

LLM: GPT-NeoX with Polyglot-Ko 1.3B's shape (hidden 2048, 24 layers, vocab 30080), random weights, four
rank-128 LoRA adapters on query_key_value like the original's. Prints the memory of four separate models
vs one model with four adapters, single-request tokens/s and time to first token, and 8-way batched
tokens/s through this project's engine. Face: the full-size StyleGAN (random weights) in fp32 and fp16,
one frame per call vs a 70-frame batch. Everything is printed and written to gpu-figures.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import torch


def llm_figures(tiny: bool, device: torch.device, out: Path) -> dict[str, float]:
    from peft import LoraConfig, get_peft_model
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from ohlora.llm.engine import LLMEngine
    from ohlora.llm.task import GenerationSettings
    from ohlora.tiny import build_tokenizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = build_tokenizer(out / "tokenizer")
    shape = dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192)
    if tiny:
        shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    config = GPTNeoXConfig(vocab_size=30080 if not tiny else len(tokenizer), max_position_embeddings=2048,
                           eos_token_id=tokenizer.eos_token_id, **shape)
    rank = 128 if not tiny else 8

    def fresh() -> torch.nn.Module:
        return GPTNeoXForCausalLM(config).to(device=device, dtype=dtype).eval()

    def memory() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated() / 2**20
        return 0.0

    results: dict[str, float] = {}
    start = memory()
    models = [fresh() for _ in range(4)]
    results["vram_four_models_mib"] = memory() - start
    del models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    start = memory()
    model = get_peft_model(fresh(), LoraConfig(r=rank, lora_alpha=16, init_lora_weights="gaussian",
                                               target_modules=["query_key_value"], task_type="CAUSAL_LM"), adapter_name="t0")
    for i in range(1, 4):
        model.add_adapter(f"t{i}", LoraConfig(r=rank, lora_alpha=16, init_lora_weights="gaussian",
                                              target_modules=["query_key_value"], task_type="CAUSAL_LM"))
    model.to(device=device, dtype=dtype)
    results["vram_one_model_four_adapters_mib"] = memory() - start

    async def measure() -> None:
        engine = LLMEngine(model, tokenizer, device, [f"t{i}" for i in range(4)], max_batch_size=8)
        engine.start()
        settings = GenerationSettings(temperature=0.6, max_new_tokens=64 if not tiny else 16)
        prompt = "로라야 오늘 뭐 해? 나는 집에서 영화 볼 거야!"

        async def one(adapter: str) -> tuple[int, float, float]:
            started = time.perf_counter()
            first, tokens = None, 0
            async for update in engine.for_adapter(adapter).generate(prompt, settings, stream=True):
                if first is None:
                    first = time.perf_counter() - started
                tokens = update.new_tokens
            return tokens, first or 0.0, time.perf_counter() - started

        await one("t0")
        tokens, ttft, seconds = await one("t0")
        results["single_tokens_per_s"] = tokens / seconds
        results["single_time_to_first_token_ms"] = ttft * 1000
        started = time.perf_counter()
        outs = await asyncio.gather(*(one("t0") for _ in range(8)))
        results["batched8_tokens_per_s"] = sum(o[0] for o in outs) / (time.perf_counter() - started)
        await engine.stop()

    asyncio.run(measure())
    return results


def face_figures(tiny: bool, device: torch.device) -> dict[str, float]:
    from services.face.stylegan import StyleGANConfig, StyleGANGenerator

    cfg = StyleGANConfig() if not tiny else StyleGANConfig(mapping_fmaps=32, fmaps_base=512, fmaps_max=16)
    frames = 70
    results: dict[str, float] = {}
    dtypes = [torch.float32, torch.float16] if device.type == "cuda" else [torch.float32]
    for dtype in dtypes:
        generator = StyleGANGenerator(cfg).to(device=device, dtype=dtype).eval()
        w = torch.randn(frames, 512, device=device, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        with torch.no_grad():
            generator.synthesize_w(w[:2])
            for label, step in (("one_per_call", 1), ("batch70", frames)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                for i in range(0, frames, step):
                    generator.synthesize_w(w[i : i + step]).float().cpu()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - started
                results[f"face_{name}_{label}_fps"] = frames / seconds
                results[f"face_{name}_{label}_ms_per_gesture"] = seconds * 1000
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="small shapes, for a CPU smoke test")
    parser.add_argument("--out", default="gpu-figures.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "tiny": args.tiny}
        results.update(llm_figures(args.tiny, device, Path(tmp)))
        results.update(face_figures(args.tiny, device))
    for key, value in results.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
