"""Sentence embeddings for memory recall (sentence-transformers)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ohlora.config import EmbedderSettings
from ohlora.runtime.device import resolve_device

if TYPE_CHECKING:
    from services.llm_memory.onnx_backend import OnnxEncoder

log = logging.getLogger(__name__)


class Embedder:
    def __init__(self, model: object, embedder_id: str, threshold: float, onnx: OnnxEncoder | None = None,
                 lexical_weight: float = 0.0) -> None:
        self.model = model
        self.onnx = onnx  # the onnx backend: the model's transformer runs in ONNX Runtime (onnx_backend)
        self.embedder_id = embedder_id
        self.threshold = threshold
        self.lexical_weight = lexical_weight  # calibrated with the threshold; the gateway applies both
        self.dimension = int(model.get_embedding_dimension())  # type: ignore[attr-defined]
        # Every encode runs on this one thread. A query is ~15 ms of work on a CPU; run from whichever
        # worker of the default pool was free, each new calling thread got its own OpenMP team and the
        # call paid for waking or creating it (docs/benchmarks.md, recall).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    async def encode_async(self, texts: list[str], kind: str = "") -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.encode, texts, kind)

    @classmethod
    def load(cls, settings: EmbedderSettings) -> "Embedder":
        from sentence_transformers import SentenceTransformer

        device = resolve_device(settings.device)
        model = SentenceTransformer(settings.model, device=str(device))
        onnx = None
        if settings.backend == "onnx" and device.type == "cpu":
            onnx = load_onnx(model, settings.model)
        elif settings.backend == "onnx":
            log.info("embedder backend onnx is for the CPU; torch runs", extra={"fields": {"device": str(device)}})
        return cls(model, Path(settings.model.rstrip("/")).name, settings.threshold, onnx, settings.lexical_weight)

    def encode(self, texts: list[str], kind: str = "") -> np.ndarray:
        """L2-normalised float32 vectors; `kind` picks the model's query/passage prompt if it has one."""
        if self.onnx is not None:
            return self.onnx.encode(texts, kind)
        prompts = getattr(self.model, "prompts", None) or {}
        with torch.inference_mode():
            vectors = self.model.encode(  # type: ignore[attr-defined]
                texts,
                prompt_name=kind if kind in prompts else None,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)


def load_onnx(model: object, model_path: str) -> OnnxEncoder:
    """The model's ONNX Runtime encoder (exported once and cached; onnx_backend), on as many threads as torch has
    in this process (llm.torch_threads, else one per core)."""
    from ohlora.runtime.cpu_memory import release_freed_memory
    from services.llm_memory.onnx_backend import OnnxEncoder

    encoder = OnnxEncoder.load(model, model_path, torch.get_num_threads())
    release_freed_memory()  # the graph's load-time copies, and the torch weights it replaces
    log.info("embedder backend onnx", extra={"fields": {"model": model_path, "threads": torch.get_num_threads()}})
    return encoder
