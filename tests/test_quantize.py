"""llm.quantize = "int8": weight-only int8 linear layers (torch's int8 kernel), with and without LoRA adapters."""

from __future__ import annotations

import asyncio

import pytest
import torch

from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.quantize import KERNEL_MAX_ROWS, Int8Linear, quantize_weights
from ohlora.llm.task import GenerationSettings

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=8)


def int8_weights(model: torch.nn.Module) -> int:
    return sum(isinstance(m, Int8Linear) and m.qweight.dtype == torch.int8 for m in model.modules())


async def _reply(engine: LLMEngine, adapter: str | None) -> str:
    text = ""
    async for update in engine.for_adapter(adapter).generate("로라야 안녕", GREEDY):
        text = update.text
    return text


def test_int8_engine_quantizes_every_linear_and_still_generates_with_adapters(tiny_models):
    plain = LLMEngine.load(EngineConfig(base_model=str(tiny_models.base), dtype="float32", device="cpu",
                                        adapters={"message": str(tiny_models.adapters["message"])}))
    engine = LLMEngine.load(EngineConfig(base_model=str(tiny_models.base), dtype="float32", device="cpu", quantize="int8",
                                         adapters={"message": str(tiny_models.adapters["message"]),
                                                   "pose": str(tiny_models.adapters["pose"])}))
    assert int8_weights(engine.model.get_base_model()) > 0
    assert int8_weights(plain.model.get_base_model()) == 0

    async def run() -> tuple[str, str, list[str]]:
        plain.start(), engine.start()
        try:
            alone = await _reply(engine, "message")
            mixed = await asyncio.gather(_reply(engine, "message"), _reply(engine, "pose"), _reply(engine, None))
            return alone, await _reply(plain, "message"), list(mixed)
        finally:
            await engine.stop()
            await plain.stop()

    alone, reference, mixed = asyncio.run(run())
    assert alone and mixed[0] == alone, "a mixed batch on int8 weights gives each row its adapter's output"
    assert len(set(mixed)) == 3, "adapters still change the output on int8 weights"
    assert reference, "the fp32 engine generated too"


def test_unknown_quantize_mode_is_refused():
    with pytest.raises(ValueError, match="int4"):
        quantize_weights(torch.nn.Linear(4, 4), "int4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, KERNEL_MAX_ROWS // 2, 40])  # x has 2 rows of each: the kernel up to its edge, then the matmul
def test_int8_linear_matches_the_float_layer_within_quantization_error(dtype, rows):
    """Few rows take torch's int8 kernel, many rows the dequantized matmul: both must match the float layer."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160).to(dtype)
    x = torch.randn(2, rows, 96, dtype=dtype)
    expected = linear(x).float()
    got = Int8Linear(linear)(x)
    assert got.dtype == dtype and got.shape == expected.shape
    error = (got.float() - expected).abs().max() / expected.abs().max()
    assert error < 0.03, error
    # and it is really quantized: the stored weight is int8, its dequantized copy close to the original
    q = Int8Linear(linear)
    assert q.qweight.dtype == torch.int8
    assert (q.weight.float() - linear.weight.float()).abs().max() <= linear.weight.float().abs().max() / 127 * 0.51 + 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_decode_runs_few_rows_on_int8_and_many_rows_on_the_kept_float_weight(dtype):
    """"int8-decode": decoding steps take the int8 kernel, prefill the untouched float weight (exactly the float layer)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160).to(dtype)
    kept, replaced = Int8Linear(linear, keep_float=True), Int8Linear(linear)
    assert kept.float_weight is not None and kept.float_weight.data_ptr() == linear.weight.data_ptr(), "no second float copy"
    many = torch.randn(1, KERNEL_MAX_ROWS + 8, 96, dtype=dtype)
    assert torch.equal(kept(many), linear(many)), "prefill runs on the float weight as loaded"
    assert not torch.equal(replaced(many), linear(many)), "while plain int8 converts its int8 weight"
    few = torch.randn(1, 1, 96, dtype=dtype)
    assert torch.equal(kept(few), replaced(few)), "a decoding step takes the int8 kernel in both modes"
    assert not torch.equal(kept(few), linear(few))


def test_int8_decode_engine_generates_and_leaves_the_float_weights_for_prefill(tiny_models):
    engine = LLMEngine.load(EngineConfig(base_model=str(tiny_models.base), dtype="float32", device="cpu",
                                         quantize="int8-decode"))
    layers = [m for m in engine.model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(m.float_weight is not None for m in layers)

    async def run() -> str:
        engine.start()
        try:
            return await _reply(engine, None)
        finally:
            await engine.stop()

    assert asyncio.run(run())
