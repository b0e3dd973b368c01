"""dtype "auto" follows the hardware: bf16 on a CPU only where it is native, fp32 otherwise; explicit wins."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.runtime.device import choose_dtype, resolve_dtype

CPU = torch.device("cpu")
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpuinfo_has_native_bf16() -> bool:
    """The kernel's view of the CPU (an oracle independent of torch's cpuinfo)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_python(code: str, env: dict[str, str]) -> str:
    import os

    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_explicit_dtype_always_wins():
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16
    assert choose_dtype("fp32", CPU).reason == "set in the config"
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", CPU)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo as the oracle")
def test_auto_on_this_cpu_is_bf16_exactly_when_the_kernel_reports_native_bf16(monkeypatch):
    for var in ("ONEDNN_MAX_CPU_ISA",):
        monkeypatch.delenv(var, raising=False)
    choice = choose_dtype("auto", CPU)
    capped = not torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    expected = torch.bfloat16 if cpuinfo_has_native_bf16() and not capped else torch.float32
    assert choice.dtype == expected, choice.reason
    assert choice.reason.startswith("auto: ")


def test_auto_is_fp32_where_torch_is_capped_at_avx2():
    """How an AVX2-only machine is emulated: the caps must win over what the silicon has."""
    out = run_python("import torch; from ohlora.runtime.device import choose_dtype; "
                     "c = choose_dtype('auto', torch.device('cpu')); print(c.name); print(c.reason)", AVX2_ONLY)
    name, reason = out.splitlines()[:2]
    assert name == "float32"
    assert "ONEDNN_MAX_CPU_ISA" in reason or "neither AVX512-BF16 nor AMX" in reason


def test_doctor_shows_the_choice_and_why(tiny_config):
    import os

    done = subprocess.run([sys.executable, "-m", "ohlora.cli", "doctor", "--config", str(tiny_config)],
                          env={**os.environ, **AVX2_ONLY}, capture_output=True, text=True, timeout=120)
    line = next((l for l in done.stdout.splitlines() if l.split()[1:2] == ["cpu"]), "")
    assert "AVX2 kernels" in line and "dtype auto on the CPU = float32" in line, done.stdout


def test_the_engine_logs_its_choice_and_loads_bf16_weights_in_either_dtype(tiny_models, tmp_path, caplog):
    """The mini weights are saved in bf16; fp32 (AVX2 machines) and bf16 must both load and generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.bfloat16).save_pretrained(saved)
    AutoTokenizer.from_pretrained(tiny_models.base).save_pretrained(saved)
    for dtype, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("auto", resolve_dtype("auto", CPU))):
        with caplog.at_level(logging.INFO, logger="ohlora.llm.engine"):
            caplog.clear()
            engine = LLMEngine.load(EngineConfig(base_model=str(saved), dtype=dtype, device="cpu"))
        assert next(engine.model.parameters()).dtype == expected
        loaded = [r.getMessage() for r in caplog.records if "loading base" in r.getMessage()]
        assert loaded and (("auto: " in loaded[0]) == (dtype == "auto")), loaded
        ids = torch.tensor([engine.tokenizer.encode("로라야 안녕")])
        with torch.inference_mode():
            out = engine.model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert out.shape[1] == ids.shape[1] + 3
