"""Device and dtype choice.

A service is pinned to a GPU by CUDA_VISIBLE_DEVICES, so "auto" means the first
visible CUDA device when there is one, else the CPU. Nothing here hard-codes cuda:N.

dtype "auto" follows the hardware, never the machine the defaults were tuned on: bf16 on
CUDA devices that support it, and on a CPU only where bf16 matrix products are native
(AVX512-BF16 or AMX). Elsewhere (AVX2-only CPUs, AVX512 without BF16, ARM) torch emulates
bf16 and a matmul runs several times slower than in fp32 (docs/benchmarks.md), so "auto"
is fp32 there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which it still has native bf16 dot products.
_ONEDNN_BF16_ISAS = {
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT",
}


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU multiplies bf16 natively, and what that answer rests on (logged, shown by doctor)."""

    native: bool
    reason: str


@dataclass(frozen=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is visible (check CUDA_VISIBLE_DEVICES)")
    return device


def cpu_capability() -> str:
    """torch's CPU kernel level (AVX512, AVX2, DEFAULT, ...), as written next to every published figure."""
    return str(torch.backends.cpu.get_cpu_capability())


def cpu_bf16_support() -> CpuBf16:
    """Asks torch (its cpuinfo) for AVX512-BF16 / AMX, and honours the caps a user may set.

    ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA limit what torch and oneDNN use, which is how an
    AVX2-only machine is emulated on a newer one: under such a cap bf16 is emulated, so not native.
    """
    import torch.cpu as tcpu

    features = []
    if getattr(tcpu, "_is_avx512_bf16_supported", lambda: False)():
        features.append("AVX512-BF16")
    if getattr(tcpu, "_is_amx_tile_supported", lambda: False)():
        features.append("AMX")
    capability = cpu_capability()
    if not features:
        return CpuBf16(False, f"the CPU has neither AVX512-BF16 nor AMX (torch kernels: {capability}); bf16 would be emulated")
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if isa_cap and isa_cap not in _ONEDNN_BF16_ISAS:
        return CpuBf16(False, f"the CPU has {' and '.join(features)}, but ONEDNN_MAX_CPU_ISA={isa_cap} caps oneDNN below them")
    if not capability.startswith("AVX512"):
        return CpuBf16(False, f"the CPU has {' and '.join(features)}, but torch's kernels are capped at {capability} "
                              "(ATEN_CPU_CAPABILITY)")
    return CpuBf16(True, f"the CPU has {' and '.join(features)} (torch kernels: {capability})")


def choose_dtype(name: str, device: torch.device) -> DtypeChoice:
    """The dtype for `name` on `device`, with the reason; an explicit dtype always wins."""
    if name != "auto":
        try:
            return DtypeChoice(DTYPES[name], "set in the config")
        except KeyError:
            raise ValueError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}") from None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return DtypeChoice(torch.bfloat16, "auto: this CUDA device supports bf16")
        return DtypeChoice(torch.float32, "auto: this CUDA device has no bf16")
    if device.type == "cpu":
        support = cpu_bf16_support()
        return DtypeChoice(torch.bfloat16 if support.native else torch.float32, f"auto: {support.reason}")
    return DtypeChoice(torch.float32, f"auto: fp32 on {device.type}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    return choose_dtype(name, device).dtype
