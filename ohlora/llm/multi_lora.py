"""Rows of different LoRA adapters in one forward pass, two batched matmuls per LoRA layer.

peft can mix adapters in a batch (`adapter_names`), but each LoRA layer then loops over the
adapters present: gather the rows, two small matmuls, scatter back, ~6 ops per adapter per
layer per step. With four adapters on a CPU that overhead cost a 135M model a third of its
step (docs/benchmarks.md, llm-mixed-adapters). This module does what Punica's BGMV and
S-LoRA do, in plain torch: every LoRA Linear keeps its adapters' A and B stacked (slot 0 is
zeros, the bare base; each B is pre-scaled), a batch gathers each row's A and B once, and
every step adds `bmm(bmm(x, A_row), B_row)` to the base layer's output.

Only plain LoRA on Linear layers is handled; anything else (DoRA and other variants, LoRA
biases, merged weights, embedding or conv LoRA) makes `StackedLoRA.build` return None and
the engine falls back to peft's own `adapter_names`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class _StackedLayer:
    module: torch.nn.Module  # a peft lora.Linear
    a: torch.Tensor  # (slots, rank, in)
    b: torch.Tensor  # (slots, out, rank), scaling folded in


class StackedLoRA:
    """The adapters of one peft model, stacked per layer; `rows()` runs a batch with one adapter per row."""

    def __init__(self, adapters: list[str], layers: list[_StackedLayer]) -> None:
        self.slots = {name: i + 1 for i, name in enumerate(adapters)}
        self.layers = layers

    @classmethod
    def build(cls, model: torch.nn.Module, adapters: list[str]) -> "StackedLoRA | None":
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora.layer import LoraLayer

        layers = []
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            reason = cls._unsupported(module, adapters, LoraLinear)
            if reason:
                log.info("mixed-adapter batches use peft's adapter_names: %s", reason)
                return None
            layers.append(cls._stack(module, adapters))
        return cls(adapters, layers) if layers else None

    @staticmethod
    def _unsupported(module: torch.nn.Module, adapters: list[str], linear: type) -> str:
        if not isinstance(module, linear):
            return f"{type(module).__name__} LoRA layers are not stacked"
        if getattr(module, "merged", False):
            return "an adapter is merged into the base"
        if getattr(module, "fan_in_fan_out", False):
            return "fan_in_fan_out layers"
        for name in adapters:
            if name in getattr(module, "lora_variant", {}):
                return f"adapter {name!r} is a LoRA variant (DoRA or similar)"
            if getattr(module, "lora_bias", {}).get(name, False):
                return f"adapter {name!r} has a LoRA bias"
        return ""

    @staticmethod
    def _stack(module: torch.nn.Module, adapters: list[str]) -> _StackedLayer:
        base = module.get_base_layer()
        # An int8 base layer (ohlora.llm.quantize) says its float dtype; others have a float weight.
        dtype = getattr(base, "compute_dtype", None) or base.weight.dtype
        device = next(module.lora_A.parameters()).device
        present = [n for n in adapters if n in module.lora_A]
        rank = max((module.lora_A[n].weight.shape[0] for n in present), default=1)
        a = torch.zeros(len(adapters) + 1, rank, base.in_features, dtype=dtype, device=device)
        b = torch.zeros(len(adapters) + 1, base.out_features, rank, dtype=dtype, device=device)
        for slot, name in enumerate(adapters, start=1):
            if name not in module.lora_A:
                continue  # this adapter does not touch this layer: its slot stays zero
            lora_a, lora_b = module.lora_A[name].weight, module.lora_B[name].weight
            r = lora_a.shape[0]
            a[slot, :r] = lora_a.to(dtype)
            b[slot, :, :r] = (lora_b * module.scaling[name]).to(dtype)
        return _StackedLayer(module, a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous())

    @contextlib.contextmanager
    def rows(self, adapters: list[str | None]) -> Iterator[None]:
        """Within this block every LoRA layer applies row i's adapter to row i (None: the bare base)."""
        index = torch.tensor([self.slots[a] if a is not None else 0 for a in adapters])
        patched = []
        try:
            for layer in self.layers:
                a_rows = layer.a[index.to(layer.a.device)]  # (rows, in, rank)
                b_rows = layer.b[index.to(layer.b.device)]  # (rows, rank, out)
                layer.module.forward = _forward(layer.module.get_base_layer(), a_rows, b_rows)
                patched.append(layer.module)
            yield
        finally:
            for module in patched:
                del module.forward  # back to the class's forward


def _forward(base: torch.nn.Module, a_rows: torch.Tensor, b_rows: torch.Tensor):
    def forward(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] != a_rows.shape[0]:
            raise RuntimeError(f"a stacked LoRA layer expects (rows={a_rows.shape[0]}, tokens, features), got {tuple(x.shape)}")
        result = base(x, *args, **kwargs)
        delta = torch.bmm(torch.bmm(x.to(a_rows.dtype), a_rows), b_rows)
        return result + delta.to(result.dtype)

    return forward
