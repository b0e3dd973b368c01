"""Weight-only int8 for the LLM's linear layers, for CPUs where decoding is memory-bound.

A decode step reads every weight once: 2 GB for Qwen2.5-0.5B in fp32, 1 GB in bf16. Stored as
int8 with one scale per output row, the same step reads a quarter (or half) of that.

The matmul is torch's own int8-weight kernel, `aten._weight_int8pack_mm` (the one torchao and
gpt-fast use on CPU); nothing here is a hand-written kernel. Why not torchao's
`Int8WeightOnlyConfig` itself: measured on Qwen2.5-0.5B in bf16 on a 2-core CPU it decoded
*slower* than the plain weights (int8_decode_speedup 0.86, docs/benchmarks.md), and with fp32
activations the kernel takes a slow path (5x slower than fp32 F.linear on one row). So:
- few rows (decoding): activations go to bf16 for the kernel and back, on any CPU;
- more rows (batched decoding, prefill): the int8 weight is converted to the activations' dtype
  for one ordinary matmul and the row scales are applied to its output (not to the weight: one
  pass over the weight fewer), so prefill runs near float speed.
The kernel is a matrix-vector product per row: its time grows with the rows, and from about 8 rows
it is slower than the float matmul on both kinds of CPU (KERNEL_MAX_ROWS below).

Two modes:
- "int8": the int8 weight replaces the float one (a quarter of fp32's memory); prefill pays the conversion.
- "int8-decode": the float weight stays for prefill and batched steps, and an int8 copy is added for the
  few-row decoding steps (a quarter more memory than fp32 alone, half more than bf16). A turn of short prompts
  (the fine-tuned `mini`) is mostly one-row decoding; this speeds it and leaves every prefill as it was.

Quantize after adapters attach: LoRA layers keep their float A and B and only their base
layer becomes int8, so adapters (and mixed-adapter batches) work unchanged.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Rows (tokens in the call) up to which the int8 kernel is used; above it, convert + matmul.
# Measured on one 896->4864 layer, 2 cores: the kernel beats the float matmul at 1 and 4 rows and
# loses from 8 (bf16 AVX512: 0.24/0.37/0.86 ms vs 0.60/0.46/0.47; fp32 AVX2: 0.36/0.61/1.49 vs 0.41/0.78/1.22).
KERNEL_MAX_ROWS = 4


class Int8Linear(torch.nn.Module):
    """A Linear whose weight is int8 with one float scale per output row (symmetric, round to nearest)."""

    def __init__(self, linear: torch.nn.Linear, keep_float: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp_min(1e-8) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype
        self.register_buffer("qweight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("float_scales", scales.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
        # "int8-decode": the float weight itself, for calls of more rows than the kernel is good for.
        self.float_weight = torch.nn.Parameter(linear.weight.detach(), requires_grad=False) if keep_float else None

    @property
    def weight(self) -> torch.Tensor:
        """The float weight if kept, else the dequantized one (for code that inspects `.weight`)."""
        if self.float_weight is not None:
            return self.float_weight
        return self.qweight.to(self.compute_dtype) * self.float_scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows <= KERNEL_MAX_ROWS and x.device.type == "cpu":
            flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales).to(x.dtype)
            out = out.reshape(*x.shape[:-1], self.out_features)
            return out if self.bias is None else out + self.bias.to(x.dtype)
        if self.float_weight is not None:
            return F.linear(x, self.float_weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        out = F.linear(x, self.qweight.to(x.dtype)) * self.float_scales.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        kept = ", float weight kept for many rows" if self.float_weight is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only{kept}"


QUANTIZE_MODES = ("int8", "int8-decode")


def quantize_weights(model: torch.nn.Module, mode: str | None) -> int:
    """Replaces every float nn.Linear (LoRA A/B excepted) with an Int8Linear; returns how many."""
    if mode is None:
        return 0
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown llm.quantize {mode!r}; use one of {', '.join(QUANTIZE_MODES)} or leave it unset")
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is torch.nn.Linear and ".lora_" not in f".{name}" and module.weight.is_floating_point()]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(module, keep_float=mode == "int8-decode"))
    log.info("quantized %d linear layers to int8 (weight-only%s)", len(targets),
             ", float weights kept for prefill" if mode == "int8-decode" else "")
    return len(targets)
