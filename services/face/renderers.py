"""Renderers behind the face service: both turn (face id, N expressions) into N RGB frames in one pass."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ohlora.config import FaceSettings
from ohlora.runtime.device import resolve_device, resolve_dtype
from services.face.face_data import FaceBank
from services.face.sketch import SketchRenderer
from services.face.stylegan import StyleGANGenerator, load_strict, postprocess


class Renderer(Protocol):
    name: str
    native_size: int

    def face_ids(self) -> list[int]: ...

    def describe(self, face_id: int) -> str: ...

    def render(self, face_id: int, expressions: np.ndarray) -> np.ndarray:
        """(N, 3) float64 weights (eyes, mouth, pose) -> (N, H, W, 3) uint8 RGB."""
        ...


class StyleGANRenderer:
    """The original's face: w = mapping(z, label) once per face, then w-space edits rendered as one batch."""

    name = "stylegan"

    def __init__(
        self,
        generator: StyleGANGenerator,
        bank: FaceBank,
        device: torch.device,
        dtype: torch.dtype,
        cpu_chunk_elements: int | None = 1 << 20,
    ) -> None:
        self.generator = generator.to(device=device, dtype=dtype).eval()
        self.generator.mapping.float()  # w is computed once per face, in float32 like the original
        self.bank = bank
        self.device = device
        self.dtype = dtype
        self.native_size = generator.config.resolution
        self.chunk_elements = cpu_chunk_elements if device.type == "cpu" else None
        self._w_cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: FaceSettings) -> "StyleGANRenderer":
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if device.type == "cpu" and dtype == torch.float16:
            raise ValueError("face.dtype float16 on a CPU is extremely slow (minutes per frame); use float32 or bfloat16")
        generator = StyleGANGenerator()
        state = torch.load(settings.checkpoint, map_location="cpu", weights_only=True)
        load_strict(generator, state)
        bank = FaceBank.load(Path(settings.face_data))
        return cls(generator, bank, device, dtype, settings.cpu_chunk_elements)

    def face_ids(self) -> list[int]:
        return [f.ohlora_no for f in self.bank.faces]

    def describe(self, face_id: int) -> str:
        return f"ohlora_no {face_id} (group {self.bank.by_no[face_id].group})"

    def w_of(self, face_id: int) -> np.ndarray:
        """The face's w in float64 (mapping in float32 as the original; cached: it never changes)."""
        if face_id not in self._w_cache:
            face = self.bank.by_no[face_id]
            z = torch.from_numpy(face.z).float().unsqueeze(0)
            label = torch.from_numpy(face.label).float().unsqueeze(0)
            with torch.no_grad():
                w = self.generator.mapping(z.to(self.device), label.to(self.device))["w"]
            self._w_cache[face_id] = w[0].double().cpu().numpy()
        return self._w_cache[face_id]

    def edited_w(self, face_id: int, expressions: np.ndarray) -> torch.Tensor:
        """w' = w + e·v_eyes + m·v_mouth + p·v_pose, summed in float64 in the original's order, then float32."""
        face = self.bank.by_no[face_id]
        w = np.broadcast_to(self.w_of(face_id), (len(expressions), 512))
        e, m, p = (expressions[:, i : i + 1] for i in range(3))
        edited = ((w + e * face.vectors["eyes"]) + m * face.vectors["mouth"]) + p * face.vectors["pose"]
        return torch.from_numpy(edited.astype(np.float32))

    def render(self, face_id: int, expressions: np.ndarray) -> np.ndarray:
        w = self.edited_w(face_id, expressions).to(self.device, self.dtype)
        with self._lock, torch.no_grad():
            images = self.generator.synthesize_w(w, self.chunk_elements)
        return postprocess(images.float())


def load_renderer(settings: FaceSettings) -> Renderer:
    if settings.renderer == "stylegan":
        return StyleGANRenderer.load(settings)
    return SketchRenderer()
