"""A StyleGAN generator whose state dict is exactly the original's checkpoint format.

Written for this project from the published description of the original's
`StyleGANGeneratorForV6` (a GenForce StyleGAN with a 3-value label embedded into the
mapping input; UPSTREAM.md §5.1 and ../shared/fixtures/upstream/README.md §2.3).
Weights are stored unscaled and multiplied by their equalised-learning-rate factor
at run time, as in the original, so its checkpoint loads strictly and computes the
same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
EPS = 1e-8
LABEL_EMBED_DIM = 16


@dataclass(frozen=True)
class StyleGANConfig:
    """Constructor arguments of the original class (defaults = the real checkpoint)."""

    resolution: int = 256
    z_dim: int = 512
    w_dim: int = 512
    label_size: int = 3
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    mapping_lr_mul: float = 0.01
    fmaps_base: int = 16 << 10
    fmaps_max: int = 512
    image_channels: int = 3

    @property
    def num_layers(self) -> int:
        return 2 * int(math.log2(self.resolution // 2))  # 14 at 256: two per resolution 4..256

    def fmaps(self, res: int) -> int:
        return min(self.fmaps_base // res, self.fmaps_max)


def _wscale(gain: float, fan_in: int, lr_mul: float = 1.0) -> float:
    # float64 like the original (numpy); torch casts it to float32 when multiplying.
    return float(gain / np.sqrt(fan_in) * lr_mul)


class Dense(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, lr_mul: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.wscale = _wscale(np.sqrt(2.0), in_dim, lr_mul)
        self.bscale = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.linear(x, self.weight * self.wscale, self.bias * self.bscale), LRELU_SLOPE)


class Mapping(nn.Module):
    """z (512) + label (3) -> w (512). The label is embedded by label_weight (3x16) and appended to z."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.label_weight = nn.Parameter(torch.randn(cfg.label_size, LABEL_EMBED_DIM))
        dims = [cfg.z_dim + LABEL_EMBED_DIM] + [cfg.mapping_fmaps] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        for i in range(cfg.mapping_layers):
            self.add_module(f"dense{i}", Dense(dims[i], dims[i + 1], cfg.mapping_lr_mul))
        self.num_layers = cfg.mapping_layers

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        if label.ndim != 2 or label.shape[0] != z.shape[0]:
            raise ValueError(f"label must have shape ({z.shape[0]}, {self.label_weight.shape[0]}), got {tuple(label.shape)}")
        embedding = label @ self.label_weight
        x = torch.cat([z, embedding], dim=1)
        x = x / torch.sqrt(torch.mean(x * x, dim=1, keepdim=True) + EPS)
        normed = x
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return {"w": x, "embedding": embedding, "z_normed": normed}


class Truncation(nn.Module):
    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, w: torch.Tensor, psi: float = 1.0, layers: int = 0) -> torch.Tensor:
        wp = w.unsqueeze(1).repeat(1, self.num_layers, 1)
        if psi < 1.0 and layers > 0:
            avg = self.w_avg.view(1, 1, -1)
            truncated = avg + (wp - avg) * psi
            wp = torch.cat([truncated[:, :layers], wp[:, layers:]], dim=1)
        return wp


class NoiseApply(nn.Module):
    def __init__(self, channels: int, res: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise", torch.randn(1, 1, res, res))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.noise * self.weight.view(1, -1, 1, 1)


class StyleMod(nn.Module):
    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2 * channels, w_dim))
        self.bias = nn.Parameter(torch.zeros(2 * channels))
        self.wscale = _wscale(1.0, w_dim)
        self.channels = channels

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        style = F.linear(w, self.weight * self.wscale, self.bias)
        split = style.view(-1, 2, self.channels, 1, 1)
        return x * (split[:, 0] + 1) + split[:, 1], style


class Blur(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
        kernel = torch.from_numpy((k / k.sum()).astype(np.float32)).view(1, 1, 3, 3).repeat(channels, 1, 1, 1)
        self.register_buffer("kernel", kernel)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, stride=1, padding=1, groups=self.channels)


class SynthesisLayer(nn.Module):
    """One style layer: (const | conv [+ upsample, blur]) -> noise -> bias -> lrelu -> instance norm -> style."""

    def __init__(self, in_ch: int, out_ch: int, res: int, w_dim: int, kind: str) -> None:
        super().__init__()
        self.kind = kind  # "const", "conv", "up" (nearest + conv), "fused" (transposed conv)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        if kind == "const":
            self.const = nn.Parameter(torch.ones(1, out_ch, res, res))
        else:
            self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
            self.wscale = _wscale(np.sqrt(2.0), 9 * in_ch)
        self.apply_noise = NoiseApply(out_ch, res)
        self.style = StyleMod(out_ch, w_dim)
        if kind in ("up", "fused"):
            self.blur = Blur(out_ch)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "const":
            x = self.const.repeat(w.shape[0], 1, 1, 1)
        else:
            assert x is not None
            weight = self.weight * self.wscale
            if self.kind == "fused":
                weight = F.pad(weight, (1, 1, 1, 1, 0, 0, 0, 0), "constant", 0.0)
                weight = weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]
                x = F.conv_transpose2d(x, weight.permute(1, 0, 2, 3), stride=2, padding=1)
            else:
                if self.kind == "up":
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = F.conv2d(x, weight, stride=1, padding=1)
            if self.kind in ("up", "fused"):
                x = self.blur(x)
        x = self.apply_noise(x)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), LRELU_SLOPE)
        dtype = x.dtype
        x = x.float()  # instance norm in float32: x² overflows float16
        x = x - torch.mean(x, dim=(2, 3), keepdim=True)
        x = x / torch.sqrt(torch.mean(x * x, dim=(2, 3), keepdim=True) + EPS)
        return self.style(x.to(dtype), w)


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.wscale = _wscale(1.0, in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.wscale) + self.bias.view(1, -1, 1, 1)


class Synthesis(nn.Module):
    """wp (N, 14, 512) -> image (N, 3, res, res), RGB, not clipped.

    Parameters are registered in the original's order (layer0, layer1, output0, layer2, ...)
    so state_dict keys come out in the checkpoint's order.
    """

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.register_buffer("lod", torch.zeros(()))
        self.num_blocks = int(math.log2(cfg.resolution)) - 1  # 7 at 256: 4, 8, ..., 256
        layer = 0
        for block in range(self.num_blocks):
            res = 4 * 2**block
            in_ch, out_ch = cfg.fmaps(res // 2 if block else res), cfg.fmaps(res)
            first_kind = "const" if block == 0 else ("fused" if res >= 128 else "up")
            self.add_module(f"layer{layer}", SynthesisLayer(in_ch, out_ch, res, cfg.w_dim, first_kind))
            self.add_module(f"layer{layer + 1}", SynthesisLayer(out_ch, out_ch, res, cfg.w_dim, "conv"))
            self.add_module(f"output{block}", ToRGB(out_ch, cfg.image_channels))
            layer += 2
        self.num_layers = layer

    def forward(self, wp: torch.Tensor, chunk_elements: int | None = None) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """`chunk_elements` caps the activation size a layer processes at once (in values).

        On a CPU, a layer's whole-batch activations at 64-256 px are gigabytes that go to
        memory and back between layers, while one frame's stay in the cache; the small
        layers, whose cost is reading their weights, gain from the whole batch. So the
        batch runs through the network together until a layer's activations would exceed
        the cap, and from there each chunk of frames goes through all remaining layers
        before the next one starts (depth first). None = the whole batch in every layer (GPU).
        """
        if float(self.lod) != 0.0:
            raise ValueError(f"synthesis.lod is {float(self.lod)}: only full-resolution checkpoints (lod 0) are supported")
        styles: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]
        image = self._run_from(0, None, wp, chunk_elements, styles)
        return {"image": image, "styles": [torch.cat(parts) for parts in styles]}

    def _run_from(
        self, start: int, x: torch.Tensor | None, wp: torch.Tensor, chunk_elements: int | None,
        styles: list[list[torch.Tensor]],
    ) -> torch.Tensor:
        """Layers start.. to the image for the frames in wp; appends each layer's styles in frame order."""
        n = wp.shape[0]
        for i in range(start, self.num_layers):
            layer = getattr(self, f"layer{i}")
            per_frame = layer.bias.numel() * layer.apply_noise.noise.numel()
            step = n if chunk_elements is None else max(1, chunk_elements // per_frame)
            if step < n:
                return torch.cat([
                    self._run_from(i, None if x is None else x[j : j + step], wp[j : j + step], chunk_elements, styles)
                    for j in range(0, n, step)
                ])
            x, style = layer(x, wp[:, i])
            styles[i].append(style)
        return getattr(self, f"output{self.num_blocks - 1}")(x)


class StyleGANGenerator(nn.Module):
    """mapping -> truncation -> synthesis, with the original's runtime settings (psi 1, fixed noise)."""

    def __init__(self, cfg: StyleGANConfig = StyleGANConfig()) -> None:
        super().__init__()
        self.config = cfg
        self.mapping = Mapping(cfg)
        self.truncation = Truncation(cfg)
        self.synthesis = Synthesis(cfg)

    def synthesize_w(self, w: torch.Tensor, chunk_elements: int | None = None) -> torch.Tensor:
        """Image tensors for a batch of w (the original renders w-space edits this way)."""
        return self.synthesis(self.truncation(w, 1.0, 0), chunk_elements)["image"]  # type: ignore[return-value]

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.synthesize_w(self.mapping(z, label)["w"])


class CheckpointError(ValueError):
    """A checkpoint that does not match the original format exactly."""


def load_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads a state dict that must match key for key and shape for shape; names the offending key otherwise."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"checkpoint lacks key {missing[0]!r} ({len(missing)} missing in all)")
    if extra:
        raise CheckpointError(f"checkpoint has unexpected key {extra[0]!r} ({len(extra)} extra in all)")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"checkpoint key {key!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)


def postprocess(images: torch.Tensor) -> np.ndarray:
    """The original's uint8 conversion: (x+1)*127.5 + 0.5 in float64, clipped, floored; NCHW -> NHWC."""
    data = images.detach().to("cpu", torch.float64).numpy()
    data = np.clip((data + 1.0) * 255.0 / 2.0 + 0.5, 0, 255).astype(np.uint8)
    return data.transpose(0, 2, 3, 1)
