"""The embedder's ONNX Runtime backend (`embedder.backend = "onnx"`).

Why: recall's floor is embedding one short query (docs/benchmarks.md, recall). On the 2-core CPU there,
e5-small encodes a Korean query (12-18 tokens) in about 12.5 ms p50 in ONNX Runtime against 24.5 ms with
sentence-transformers on torch, both on 2 threads; through the memory service the Embed call went from
35 ms to 14 ms p50. The work is float32 matrix products either way; ONNX Runtime runs fewer, fused kernels
with no Python between them.

Only the transformer (token ids -> token embeddings) runs in ONNX Runtime, in float32 like torch. The
tokenizer, the query/passage prompts, the pooling and the normalisation stay the sentence-transformers
model's own, so a text gets the vector the torch backend gives it within float rounding (1e-6 on e5-small;
tests/test_embedder.py). sentence-transformers' own `backend="onnx"` needs optimum-onnx, which pins
transformers < 4.58 (this project runs transformers 5), so the export is done here with torch's exporter.

The export runs once and is cached next to the model (`<model>/onnx/`; under the models folder for a hub id
or a model folder that cannot be written), written into a temporary folder that is renamed into place when
complete, so an interrupted export is redone, never half-used. Its manifest records what it was exported
from; a model whose weights changed is exported again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ohlora.errors import ConfigError

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "ohlora-export.json"
# Bump when the exported graph changes (inputs, outputs, opset, how it is traced): old exports are redone.
EXPORT_FORMAT = 2
# Largest difference from torch's token embeddings an export may show on EXAMPLE_TEXTS (float rounding is ~1e-6).
TOLERANCE = 1e-4
# 17 has LayerNormalization as one op (ONNX Runtime runs it as one kernel instead of a dozen).
OPSET = 17
OUTPUT = "token_embeddings"
# Texts per session run, as SentenceTransformer.encode's default batch size.
BATCH = 32
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Traced on two texts of different lengths, so the graph holds the padding-mask path (a batch without
# padding lets transformers skip the mask) and no length is frozen into it.
EXAMPLE_TEXTS = ["query: 짧은 예시", "passage: 길이가 다른 두 번째 예시 문장입니다, the export traces padding"]
MISSING = "the onnx embedder backend needs onnxruntime: pip install 'ohlora-services[mini]' (or: make install)"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(MISSING) from exc
    return onnxruntime


def _transformer(model: Any) -> Any:
    """The model's input module, whose work the backend takes over; only a Hugging Face transformer exports."""
    from sentence_transformers.base.modules.transformer import Transformer

    first = model[0]
    if not isinstance(first, Transformer) or getattr(first, "backend", "torch") != "torch":
        raise ConfigError(f"embedder.backend = 'onnx' needs a sentence-transformers model whose first module is a "
                          f"torch Transformer; this one starts with {type(first).__name__}: use backend = 'torch'")
    return first


def cache_dirs(model_path: str) -> list[Path]:
    """Where an export of `model_path` may live, first choice first: `<model>/onnx` for a local folder, then a
    folder under the models folder (for a hub id, or a read-only model folder that was not prepared)."""
    local = Path(model_path).expanduser()
    from ohlora.presets import default_models_dir

    digest = hashlib.sha256(str(local.resolve() if local.is_dir() else model_path).encode()).hexdigest()[:12]
    fallback = default_models_dir() / ONNX_DIR / f"{Path(model_path.rstrip('/')).name}-{digest}"
    return [local / ONNX_DIR, fallback] if local.is_dir() else [fallback]


def cache_dir(model_path: str) -> Path:
    """Where a new export of `model_path` is written: the first of cache_dirs whose parent is writable."""
    dirs = cache_dirs(model_path)
    return next((d for d in dirs if os.access(d.parent, os.W_OK)), dirs[-1])


def source_fingerprint(model_path: str, revision: str | None = None) -> dict[str, Any]:
    """What an export is made from: the weight and config files of a local model (name, size, mtime), or a hub
    model's revision; plus the export format and the exporter's versions."""
    import transformers

    local = Path(model_path).expanduser()
    files: dict[str, list[int]] = {}
    if local.is_dir():
        for path in sorted(local.iterdir()):
            if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name == "config.json"):
                stat = path.stat()
                files[path.name] = [stat.st_size, stat.st_mtime_ns]
    return {"format": EXPORT_FORMAT, "opset": OPSET, "files": files, "revision": None if files else revision,
            "torch": torch.__version__, "transformers": transformers.__version__}


def ready_export(model_path: str, revision: str | None = None) -> Path | None:
    """The .onnx file of a finished export made from the model as it is now, else None. A read-only model
    folder (a container's volume) is read where its preparation wrote the export."""
    current = source_fingerprint(model_path, revision)
    for folder in cache_dirs(model_path):
        manifest = folder / MANIFEST_FILE
        if manifest.is_file() and (folder / MODEL_FILE).is_file():
            made_from = json.loads(manifest.read_text())
            if {k: made_from.get(k) for k in current} == current:
                return folder / MODEL_FILE
    return None


class _TokenEmbeddings(torch.nn.Module):
    """The exported function: token ids (and mask) -> the transformer's last hidden state."""

    def __init__(self, auto_model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.auto_model = auto_model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.auto_model(**dict(zip(self.names, inputs)), return_dict=True).last_hidden_state


def export(model: Any, out: Path) -> bool:
    """Writes the model's transformer as ONNX to `out`: fp32, dynamic batch and length, checked against torch.

    Eager attention is traced (the model's own attention implementation is restored afterwards). Then, where
    the `onnx` package is installed, ONNX Runtime's BERT fusions rewrite the graph (attention, embedding,
    skip-layer-norm and bias-gelu each as one kernel; e5-small: a query 1.3 ms faster). Each graph is kept
    only if it reproduces torch's token embeddings on EXAMPLE_TEXTS within TOLERANCE: the fused one falls back
    to the plain one, a plain one that does not is refused. Returns whether the fused graph was kept.
    """
    transformer = _transformer(model)
    features = model.preprocess(EXAMPLE_TEXTS)
    names = [n for n in TOKEN_INPUTS if n in features]
    auto_model = transformer.auto_model
    with torch.inference_mode():
        expected = auto_model(**{n: features[n] for n in names}, return_dict=True).last_hidden_state.numpy()
    _trace(auto_model, names, features, out)
    inputs = {n: features[n].numpy() for n in names}
    if (diff := _max_diff(out, inputs, expected)) > TOLERANCE:
        raise ConfigError(f"the ONNX export of {type(auto_model).__name__} differs from torch by {diff:.2g} "
                          f"(more than {TOLERANCE}): use embedder.backend = 'torch'")
    fused = out.with_name("fused.onnx")
    kept = _fuse(out, fused, auto_model.config) and _max_diff(fused, inputs, expected) <= TOLERANCE
    if kept:
        fused.replace(out)
    fused.unlink(missing_ok=True)
    return kept


def _trace(auto_model: torch.nn.Module, names: list[str], features: dict[str, Any], out: Path) -> None:
    attention = auto_model.config._attn_implementation
    auto_model.set_attn_implementation("eager")  # plain MatMul/Softmax: what ONNX Runtime's fusions recognise
    try:
        with torch.no_grad():
            torch.onnx.export(
                _TokenEmbeddings(auto_model, names).eval(), tuple(features[n] for n in names), str(out),
                dynamo=False,  # the TorchScript exporter: no onnxscript package needed
                input_names=names, output_names=[OUTPUT], opset_version=OPSET, do_constant_folding=True,
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, OUTPUT: {0: "batch", 1: "sequence"}},
            )
    finally:
        auto_model.set_attn_implementation(attention)


def _fuse(source: Path, out: Path, config: Any) -> bool:
    """ONNX Runtime's BERT graph fusions (onnxruntime.transformers, which needs the `onnx` package) into `out`;
    False when they cannot run here."""
    try:
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(str(source), model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size, opt_level=0, use_gpu=False)
        fused.save_model_to_file(str(out))
    except Exception as exc:  # noqa: BLE001 - an optional speed-up: the plain graph is kept
        log.info("onnx fusions skipped", extra={"fields": {"reason": f"{type(exc).__name__}: {exc}"[:200]}})
        return False
    return True


def _max_diff(path: Path, inputs: dict[str, np.ndarray], expected: np.ndarray) -> float:
    """The largest difference between the graph's token embeddings and torch's."""
    graph = session(path, 1)
    names = {i.name for i in graph.get_inputs()}
    got = graph.run([OUTPUT], {n: v.astype(np.int64) for n, v in inputs.items() if n in names})[0]
    return float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")


def ensure_export(model_path: str, model: Any) -> Path:
    """The cached export of the model (made now if missing or stale): the path of its .onnx file."""
    revision = getattr(_transformer(model).auto_model.config, "_commit_hash", None)
    if (ready := ready_export(model_path, revision)) is not None:
        return ready
    target = cache_dir(model_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would hide the export from a service running as another user
    try:
        fused = export(model, work / MODEL_FILE)
        manifest = {**source_fingerprint(model_path, revision), "graph": "fused" if fused else "plain"}
        (work / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        if target.exists():  # stale: replaced, not merged
            shutil.rmtree(target)
        try:
            work.rename(target)
        except OSError:  # another process finished the same export first: use theirs
            if ready_export(model_path, revision) is None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / MODEL_FILE


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session for one encode at a time on `threads` threads.

    Threads do not spin waiting for work: the memory service shares its CPU with the LLM, and with another
    process busy on the second of two cores, two spinning threads took 33 ms a query against 17 ms idle-waiting.
    """
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _drop_weights(module: torch.nn.Module) -> None:
    """Frees a module's weights (the session has its own copy)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.data = torch.empty(0, dtype=parameter.dtype, device=parameter.device)


class OnnxEncoder:
    """`SentenceTransformer.encode(texts, prompt_name=kind, normalize_embeddings=True)` with the transformer in
    ONNX Runtime.

    The model's own pieces do the rest: `preprocess` (prompt, tokenizer, truncation, padding) and the modules
    after the transformer (pooling, normalisation). encode() itself is not called: around one short query it
    spent about 2 ms of bookkeeping (model.eval() over every module, device moves), a tenth of the work.
    """

    def __init__(self, model: Any, ort_session: Any) -> None:
        self.model = model
        self.session = ort_session
        self.inputs = [i.name for i in ort_session.get_inputs()]
        self.output_name = _transformer(model).module_output_name
        self.after = list(model.children())[1:]

    @classmethod
    def load(cls, model: Any, model_path: str, threads: int) -> "OnnxEncoder":
        """The encoder of `model` (exported now if there is no current export).

        The transformer's torch weights are dropped: the session holds its own copy (e5-small: 470 MB). What they
        and the session's load leave free stays in a CPU service's heap until released (Embedder.load does).
        """
        path = ensure_export(model_path, model)
        _drop_weights(_transformer(model).auto_model)
        return cls(model, session(path, threads))

    def prompt(self, kind: str) -> str | None:
        """The prompt encode(prompt_name=kind or None) would use: the kind's, else the model's default one."""
        prompts = getattr(self.model, "prompts", None) or {}
        if kind in prompts:
            return prompts[kind]
        default = getattr(self.model, "default_prompt_name", None)
        return prompts.get(default) if default else None

    def encode(self, texts: list[str], kind: str = "") -> np.ndarray:
        """L2-normalised float32 vectors, batched as encode() batches: longest first, BATCH texts at a time."""
        if not texts:
            return np.empty((0, self.model.get_embedding_dimension()), np.float32)
        prompt = self.prompt(kind)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            for i, vector in zip(batch, self._encode_batch([texts[i] for i in batch], prompt)):
                vectors[i] = vector
        return np.stack(vectors)

    def _encode_batch(self, texts: list[str], prompt: str | None) -> np.ndarray:
        features = self.model.preprocess(texts, prompt=prompt)
        inputs = {n: np.ascontiguousarray(features[n].numpy(), dtype=np.int64) for n in self.inputs}
        with torch.inference_mode():
            features[self.output_name] = torch.from_numpy(self.session.run([OUTPUT], inputs)[0])
            for module in self.after:
                features = module(features)
            return torch.nn.functional.normalize(features["sentence_embedding"], p=2, dim=1).numpy()
