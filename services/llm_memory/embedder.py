"""Sentence embeddings for memory recall (sentence-transformers)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ohlora.config import EmbedderSettings
from ohlora.runtime.device import resolve_device


class Embedder:
    def __init__(self, model: object, embedder_id: str, threshold: float) -> None:
        self.model = model
        self.embedder_id = embedder_id
        self.threshold = threshold
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
        return cls(model, Path(settings.model.rstrip("/")).name, settings.threshold)

    def encode(self, texts: list[str], kind: str = "") -> np.ndarray:
        """L2-normalised float32 vectors; `kind` picks the model's query/passage prompt if it has one."""
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
