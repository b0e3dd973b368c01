"""The memory service's embedder on its two backends: ONNX Runtime must give the vectors torch gives (the
recall threshold has to mean the same on both), and the ONNX export is made once, cached next to the model,
and made again only when the model changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ohlora.config import EmbedderSettings
from services.llm_memory import onnx_backend
from services.llm_memory.embedder import Embedder

pytest.importorskip("onnxruntime")

# Short and long, Korean and English, one that the tiny tokenizer mostly does not know: batches pad.
TEXTS = ["안녕", "[좋아하는 음식: 떡볶이]", "엄마 생일이 언제였더라? 선물 준비해야 하는데",
         "the tiny embedder learned its words from the tiny preset's corpus", "ㅋㅋ", "내일 부산 여행 가"]


@pytest.fixture
def tiny_embedder(tmp_path: Path) -> Path:
    """A two-layer BERT sentence-transformers model built in code (ohlora.tiny), in a folder of its own."""
    from ohlora.tiny import build_embedder

    return build_embedder(tmp_path / "embedder")


def load(model: Path, backend: str) -> Embedder:
    return Embedder.load(EmbedderSettings(model=str(model), device="cpu", threshold=0.5, backend=backend))


def test_onnx_gives_the_torch_vectors(tiny_embedder: Path):
    torch_vectors = load(tiny_embedder, "torch").encode(TEXTS)
    onnx = load(tiny_embedder, "onnx")
    batched = onnx.encode(TEXTS)
    one_by_one = np.stack([onnx.encode([t])[0] for t in TEXTS])
    assert batched.dtype == np.float32 and batched.shape == torch_vectors.shape
    assert onnx.encode([]).shape == (0, onnx.dimension)
    assert np.abs(batched - torch_vectors).max() <= 1e-4
    assert np.abs(one_by_one - torch_vectors).max() <= 1e-4
    scores = lambda v: v @ v.T  # what recall compares with the threshold
    assert np.abs(scores(batched) - scores(torch_vectors)).max() <= 1e-4


def test_the_export_is_cached_next_to_the_model(tiny_embedder: Path):
    import importlib.util
    import json

    load(tiny_embedder, "onnx")
    export = tiny_embedder / onnx_backend.ONNX_DIR / onnx_backend.MODEL_FILE
    manifest = json.loads((export.parent / onnx_backend.MANIFEST_FILE).read_text())
    # ONNX Runtime's fusions need the onnx package (the mini extra has it); unfused, the plain graph serves.
    assert manifest["graph"] == ("fused" if importlib.util.find_spec("onnx") else "plain")
    made = export.stat().st_mtime_ns
    load(tiny_embedder, "onnx")
    assert export.stat().st_mtime_ns == made, "a second load uses the export"
    assert [p.name for p in tiny_embedder.iterdir() if "partial" in p.name] == []


def test_changed_weights_are_exported_again(tiny_embedder: Path):
    load(tiny_embedder, "onnx")
    export = tiny_embedder / onnx_backend.ONNX_DIR / onnx_backend.MODEL_FILE
    made = export.stat().st_mtime_ns
    weights = tiny_embedder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    load(tiny_embedder, "onnx")
    assert export.stat().st_mtime_ns != made


def test_an_interrupted_export_is_never_used(tiny_embedder: Path, monkeypatch: pytest.MonkeyPatch):
    from sentence_transformers import SentenceTransformer

    def dies(model: object, out: Path) -> None:
        out.write_bytes(b"half an export")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_backend, "export", dies)
    with pytest.raises(KeyboardInterrupt):
        onnx_backend.ensure_export(str(tiny_embedder), SentenceTransformer(str(tiny_embedder), device="cpu"))
    assert not (tiny_embedder / onnx_backend.ONNX_DIR).exists()
    assert [p.name for p in tiny_embedder.iterdir() if "partial" in p.name] == []


def test_a_read_only_model_folder_serves_the_export_its_preparation_wrote(tiny_embedder: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """As in docker-compose: `ohlora models prepare` exports into the models volume, the services mount it read-only."""
    load(tiny_embedder, "onnx")  # the preparation, with the folder writable
    made = (tiny_embedder / onnx_backend.ONNX_DIR / onnx_backend.MODEL_FILE).stat().st_mtime_ns
    monkeypatch.setenv("OHLORA_MODELS", str(tmp_path / "models"))
    writable = os.access
    monkeypatch.setattr(onnx_backend.os, "access", lambda path, mode: writable(path, mode) and Path(path) != tiny_embedder)
    assert onnx_backend.cache_dir(str(tiny_embedder)).is_relative_to(tmp_path / "models")  # where a new one would go
    load(tiny_embedder, "onnx").encode(TEXTS)
    assert (tiny_embedder / onnx_backend.ONNX_DIR / onnx_backend.MODEL_FILE).stat().st_mtime_ns == made
    assert not (tmp_path / "models").exists(), "nothing exported again elsewhere"
