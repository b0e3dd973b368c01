"""`ohlora train-recall`: a LoRA adapter that teaches the memory-recall embedder which turns a memory is about.

Why: the gateway recalls the stored memory whose cosine with the user's turn is highest, if it reaches a threshold.
An embedder that was never shown `[key: value]` memories scores them against Korean chat by wording, not by topic:
multilingual-e5-small puts related and unrelated turns in the same narrow band (median top-1 cosine 0.863 vs 0.852
on the calibration set, docs/models.md), so no threshold both recalls and stays quiet. The original fine-tuned its
S-BERT on (memory, turn, score) pairs for the same reason (UPSTREAM.md §3.3); this does it on the persona dataset.
A turn carrying a recalled memory (`[key: value] text`) and a turn that states a fact (its `memory` column) pair
that memory with the user's text, embedded as the gateway embeds it (without a leading "로라야"), the memory as the
model's "passage" and the turn as its "query":
- "ranking" (the default, and the shipped adapter's): MultipleNegativesRankingLoss, each turn against every memory
  of its batch; the right memory is to rank first;
- "cosine" (the original's CosineSimilarityLoss): those pairs score 1, and the memory with other turns, whose memory
  key differs or that hold nothing to remember, scores 0. Keys compare as in the original: same key is the same
  topic, except `상태` (a state), compared by its whole value. Measured worse (docs/training.md): it pushed every
  cosine down and left the ranking as it was.
`--extra-pairs` adds pairs written for recall alone (ohlora/train/data/recall-pairs.csv: a memory and a later turn
about its topic that does not name its value, "캣타워 새로 사 줄까" for `[반려동물: 고양이 치즈]`): the dataset's
memory turns are mostly the turns that state the fact, which share its words, where recall is needed for the later
ones that do not. Sentence-transformers' trainer runs either. The adapter is merged into the embedder's weights for serving
(`merge_recall_adapter`; the mini preset does it when it prepares), so recall costs nothing more.
"""

from __future__ import annotations

import json
import random
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ohlora.errors import ConfigError
from ohlora.llm.final_input import split_final_input
from ohlora.llm.persona import without_address
from ohlora.train.dataset import PERSONA_CSV, SPLITS, DatasetError, PersonaRow, check_answer, load_rows, sha256_file
from ohlora.train.sft import REPORT_FILE, adapter_sha256, base_sha256

# LoRA on every linear layer of the encoder's blocks (BERT names).
TARGET_MODULES = ["query", "key", "value", "dense"]
# The key whose value, not its name, says what a memory is about (the original's rule).
STATE_KEY = "상태"


@dataclass
class RecallTrainConfig:
    """One run. Defaults are the ones the shipped mini-recall adapter was trained with (docs/training.md)."""

    embedder: str
    out: Path
    data: Path = PERSONA_CSV
    epochs: float = 4.0
    learning_rate: float = 2e-4
    batch_size: int = 32
    rank: int = 8
    alpha: int = 16
    negatives: int = 4  # score-0 pairs per score-1 pair ("cosine" loss only)
    # "ranking": MultipleNegativesRankingLoss on the related pairs (each turn against every memory in its batch);
    # "cosine": the original's CosineSimilarityLoss on related and unrelated pairs with their scores.
    loss: Literal["ranking", "cosine"] = "ranking"
    max_steps: int = -1  # > 0: stop after this many steps (CI, smoke runs)
    seed: int = 1234
    # A recall-pairs CSV (load_recall_pairs) added to both splits, as related pairs only (--loss cosine gives them no
    # unrelated ones).
    extra_pairs: Path | None = None
    extra_repeat: int = 1  # times each extra train pair is shown an epoch (they are few beside the dataset's)


@dataclass(frozen=True)
class RecallPair:
    memory: str
    text: str
    score: float


def topic(memory: str) -> str:
    """What a `[key: value]` memory is about: its key, or for a state its whole memory."""
    key = memory.strip("[] ").split(":", 1)[0].strip()
    return memory if key == STATE_KEY else key


def recall_pairs(rows: list[PersonaRow], negatives: int, seed: int) -> list[RecallPair]:
    """Score-1 pairs from the rows, each followed by `negatives` score-0 pairs of its memory with other turns."""
    related: list[tuple[str, str]] = []
    turns: list[tuple[str, str]] = []  # (user text, the topic it is about or "")
    for row in rows:
        final = split_final_input(row.input_data)
        text = without_address(final.text)  # as the gateway embeds a turn for recall
        about = ""
        if final.memory:
            related.append((final.memory, text))
            about = topic(final.memory)
        if row.memory:
            related.append((row.memory, text))
            about = about or topic(row.memory)
        turns.append((text, about))
    rng = random.Random(seed)
    pairs = []
    for memory, text in related:
        pairs.append(RecallPair(memory, text, 1.0))
        others = [t for t, about in turns if about != topic(memory) and t != text]
        pairs += [RecallPair(memory, other, 0.0) for other in rng.sample(others, min(negatives, len(others)))]
    return pairs


RECALL_PAIRS_CSV = PERSONA_CSV.parent / "recall-pairs.csv"
RECALL_PAIR_COLUMNS = ("data_type", "memory", "turn")


def load_recall_pairs(path: Path) -> dict[str, list[tuple[str, str]]]:
    """(memory, turn) pairs per split from a CSV with RECALL_PAIR_COLUMNS; each memory one the memory service's own
    parser reads back as itself (the persona dataset's check, check_answer), with a key of the vocabulary. Errors
    name the row, before any training."""
    import csv

    from ohlora.llm.persona import MEMORY_KEYS
    from ohlora.llm.task import Dialect, Reject

    if not path.is_file():
        raise DatasetError(f"recall pairs {path} do not exist")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in RECALL_PAIR_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(RECALL_PAIR_COLUMNS)})")
        splits: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
        for number, row in enumerate(reader, start=2):
            memory, turn, split = (row[c].strip() for c in ("memory", "turn", "data_type"))
            if split not in splits:
                raise DatasetError(f"{path}:{number}: data_type {split!r} is neither train nor valid")
            try:
                check_answer("memory", memory, Dialect.TUNED)
            except Reject as exc:
                raise DatasetError(f"{path}:{number}: memory {memory!r} is rejected by the memory parser: {exc}") from exc
            if not memory or memory[1:].split(":")[0].strip() not in MEMORY_KEYS:
                raise DatasetError(f"{path}:{number}: memory {memory!r} has no key of the vocabulary")
            if not turn:
                raise DatasetError(f"{path}:{number}: empty turn")
            splits[split].append((memory, without_address(turn)))
    return splits


def command_line(config: RecallTrainConfig) -> str:
    args = ["--embedder", config.embedder, "--out", str(config.out), "--data", str(config.data),
            "--epochs", str(config.epochs), "--lr", str(config.learning_rate), "--batch-size", str(config.batch_size),
            "--rank", str(config.rank), "--alpha", str(config.alpha), "--loss", config.loss,
            "--negatives", str(config.negatives),
            "--max-steps", str(config.max_steps), "--seed", str(config.seed)]
    if config.extra_pairs:
        args += ["--extra-pairs", str(config.extra_pairs), "--extra-repeat", str(config.extra_repeat)]
    return "ohlora train-recall " + shlex.join(args)


def _dataset(pairs: list[RecallPair], loss: str) -> Any:
    from datasets import Dataset

    if loss == "ranking":  # (turn, its memory): the other memories of the batch are the turn's negatives
        related = [p for p in pairs if p.score == 1.0]
        return Dataset.from_dict({"text": [p.text for p in related], "memory": [p.memory for p in related]})
    return Dataset.from_dict({"memory": [p.memory for p in pairs], "text": [p.text for p in pairs],
                              "label": [p.score for p in pairs]})


def train_recall(config: RecallTrainConfig) -> dict[str, Any]:
    """Builds the pairs, trains the adapter, saves it with a report; returns the report."""
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.losses import CosineSimilarityLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments
    from transformers import set_seed

    from ohlora.bench import machine_info

    rows = load_rows(config.data)
    extra = load_recall_pairs(config.extra_pairs) if config.extra_pairs else {}
    splits = {split: recall_pairs([r for r in rows if r.data_type == split], config.negatives, config.seed)
              + [RecallPair(memory, turn, 1.0) for memory, turn in extra.get(split, [])
                 for _ in range(config.extra_repeat if split == "train" else 1)]
              for split in ("train", "valid")}
    for split, pairs in splits.items():
        if not any(p.score == 1.0 for p in pairs):
            raise ConfigError(f"{config.data}: the {split} split has no turn with a memory (a `[key: value] ...` input "
                              "or a memory column) to learn recall from")
    set_seed(config.seed)
    try:
        model = SentenceTransformer(config.embedder, device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"the embedder {config.embedder!r} does not load: {type(exc).__name__}: {exc}") from exc
    # peft's own wrapper (transformers' add_adapter wants a newer peft than the LLM side pins), so the
    # transformer saves the adapter alone.
    model[0].model = get_peft_model(model[0].model, LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                                               lora_dropout=0.05, target_modules=TARGET_MODULES))
    prompts = getattr(model, "prompts", None) or {}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(config.out / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_ratio=0.1,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=10,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=True,
        report_to="none",
        # The memory as the service embeds a stored one, the turn as it embeds a query.
        prompts={"memory": prompts.get("passage", ""), "text": prompts.get("query", "")},
    )
    loss = MultipleNegativesRankingLoss(model) if config.loss == "ranking" else CosineSimilarityLoss(model)
    datasets = {split: _dataset(pairs, config.loss) for split, pairs in splits.items()}
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets["train"],
                                         eval_dataset=datasets["valid"], loss=loss)
    before = trainer.evaluate()["eval_loss"]
    started = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - started
    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    final = evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else trainer.evaluate()
    config.out.mkdir(parents=True, exist_ok=True)
    model[0].model.save_pretrained(str(config.out))
    adapter_file = config.out / "adapter_model.safetensors"
    report = {
        "command": command_line(config),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "embedder": config.embedder,
        "embedder_sha256": base_sha256(config.embedder),
        "data": config.data.name,
        "data_sha256": sha256_file(config.data),
        "extra_pairs": config.extra_pairs.name if config.extra_pairs else None,
        "extra_pairs_sha256": sha256_file(config.extra_pairs) if config.extra_pairs else None,
        "adapter_sha256": adapter_sha256(str(config.out)),
        "adapter_bytes": adapter_file.stat().st_size,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_pairs": len(datasets["train"]),
        "valid_pairs": len(datasets["valid"]),
        "related_pairs": {split: sum(p.score == 1.0 for p in pairs) for split, pairs in splits.items()},
        "epochs": trainer.state.epoch,
        "steps": trainer.state.global_step,
        "seconds": round(elapsed, 1),
        "valid_loss_before": before,
        "final_valid_loss": final.get("eval_loss"),
        "valid_loss_per_epoch": [(h["epoch"], h["eval_loss"]) for h in evals],
        "final_train_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "machine": {**machine_info(), "dtype": "float32", "device": "cpu"},
    }
    (config.out / REPORT_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return report


def merge_recall_adapter(model: Any, adapter: str | Path) -> Any:
    """`model` (a SentenceTransformer) with the recall adapter merged into its transformer's weights."""
    from peft import PeftModel

    encoder = model[0]
    try:
        encoder.model = PeftModel.from_pretrained(encoder.model, str(adapter)).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"the recall adapter {str(adapter)!r} does not load on the embedder: "
                          f"{type(exc).__name__}: {exc}") from exc
    return model
