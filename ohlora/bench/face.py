"""Face benchmark: frames/s of the sketch and of the full-size StyleGAN, batched vs one frame per call."""

from __future__ import annotations

import time

import numpy as np
import torch

from ohlora.bench import SuiteResult
from ohlora.runtime.cpu_memory import keep_freed_memory
from services.face.face_data import GROUPS, PROPERTIES, Face, FaceBank
from services.face.renderers import Renderer, StyleGANRenderer
from services.face.sketch import SketchRenderer
from services.face.stylegan import StyleGANGenerator


def _gesture(frames: int) -> np.ndarray:
    """An answer gesture like the gateway's: ease from idle to an expression and back."""
    curve = (1 - np.cos(np.linspace(0, np.pi, frames))) / 2
    idle, target = np.array([0.2, 1.0, 0.0]), np.array([-1.0, -1.3, -1.2])
    return idle + (target - idle) * np.sin(np.pi * curve)[:, None]


def _random_bank() -> FaceBank:
    rng = np.random.default_rng(0)
    vectors = {p: (lambda v: v / np.linalg.norm(v))(rng.standard_normal(512)) for p in PROPERTIES}
    return FaceBank([Face(127, rng.standard_normal(512), rng.standard_normal(3), GROUPS[4], vectors)])


def _time(renderer: Renderer, face_id: int, weights: np.ndarray, per_call: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(weights), per_call):
        renderer.render(face_id, weights[i : i + per_call])
    return time.perf_counter() - started


def _gflop_per_frame(generator: StyleGANGenerator) -> float:
    """Arithmetic of one frame (convolutions and matmuls), counted by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        generator.synthesize_w(torch.zeros(1, generator.config.w_dim))
    return counter.get_total_flops() / 1e9


def _matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    """What this CPU sustains on a large fp32 matmul: the scale the StyleGAN figures are compared to."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def face(quick: bool) -> SuiteResult:
    keep_freed_memory()  # as `ohlora serve face` does on a CPU
    frames = 16 if quick else 70
    weights = _gesture(frames)
    torch.manual_seed(0)
    stylegan = StyleGANRenderer(StyleGANGenerator(), _random_bank(), torch.device("cpu"), torch.float32)
    sketch = SketchRenderer()
    for renderer, face_id in ((sketch, 0), (stylegan, 127)):
        renderer.render(face_id, weights[:2])  # warm-up
    rows: list[list[object]] = []
    fps: dict[tuple[str, str], float] = {}
    modes = (("one frame per call", 1), (f"{frames} frames, one call", frames))
    for renderer, face_id in ((sketch, 0), (stylegan, 127)):
        best = {label: float("inf") for label, _ in modes}
        for _ in range(1 if quick else 2):  # the two ways alternate; each keeps its best round (a noisy machine)
            for label, per_call in modes:
                best[label] = min(best[label], _time(renderer, face_id, weights, per_call))
        for label, seconds in best.items():
            fps[(renderer.name, label.split(",")[0])] = frames / seconds
            rows.append([renderer.name, label, frames, seconds, frames / seconds, 1000 * seconds / frames])
    sketch_fps = fps[("sketch", f"{frames} frames")]
    speedup = fps[("stylegan", f"{frames} frames")] / fps[("stylegan", "one frame per call")]
    gflop = _gflop_per_frame(stylegan.generator)
    matmul = _matmul_gflops()
    single, batched = (gflop * fps[("stylegan", key)] for key in ("one frame per call", f"{frames} frames"))
    return SuiteResult(
        columns=["renderer", "calls", "frames", "seconds", "frames/s", "ms/frame"],
        rows=rows,
        results={"stylegan_batch_speedup": speedup, "sketch_fps": sketch_fps},
        notes=[
            f"StyleGAN arithmetic: {gflop:.1f} GFLOP per frame; one frame per call sustains {single:.0f} GFLOP/s, "
            f"the batch {batched:.0f} GFLOP/s, a 2048² fp32 matmul {matmul:.0f} GFLOP/s on this CPU: "
            f"a 1.5x batch speedup would need {1.5 * single:.0f} GFLOP/s",
            f"in-process renderer calls at 256x256 on CPU ({torch.get_num_threads()} threads), fp32, "
            "full-size StyleGAN with random weights; a gesture of eased expressions",
            "a CPU batch runs whole through the small layers, then depth first in chunks of at most "
            "face.cpu_chunk_elements activation values (see Synthesis.forward)",
        ],
    )
