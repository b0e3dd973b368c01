"""`ohlora train`: LoRA supervised fine-tuning of one or more tasks on a base model, with transformers' Trainer.

Each example is a task's prompt exactly as the service builds and tokenizes it (`TaskSpec.prompt`,
`encode_prompt`), followed by the answer; the loss covers the answer only, as the original masked its
prompt. Several tasks in one run share one adapter (the tuned dialect's short system line tells them
apart). Everything that can be wrong with the input is checked before the model loads.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ohlora.errors import ConfigError
from ohlora.llm.final_input import split_final_input
from ohlora.llm.task import Dialect
from ohlora.train.dataset import PersonaRow, answer_text, load_checked, sha256_file, task_spec

# Ignored by the loss: the prompt part of every example, and padding.
IGNORE = -100
REPORT_FILE = "training-report.json"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainConfig:
    """One training run. Defaults are the ones the shipped mini adapter was trained with (docs/training.md)."""

    base: str
    data: Path
    out: Path
    tasks: list[str]
    dialect: Dialect = Dialect.TUNED
    epochs: float = 3.0
    learning_rate: float = 3e-4
    batch_size: int = 8
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # None: every linear layer of the blocks (peft's "all-linear": attention and MLP, not the output head).
    target_modules: list[str] | None = None
    # LoRA on the upper N layers only (0 = all): the backward pass stops there, so a step costs less.
    upper_layers: int = 0
    max_steps: int = -1  # > 0: stop after this many optimizer steps (CI, smoke runs)
    save_steps: int = 50
    seed: int = 1234
    dtype: str = "auto"
    device: str = "auto"
    init_adapter: str | None = None  # continue from an existing adapter (e.g. the original's)
    # Merged into the base before the new LoRA is added: the new adapter is a delta trained on top of an already
    # fine-tuned persona (mini's memory adapter over its persona adapter); serve it with the same `llm.base_adapter`.
    base_adapter: str | None = None
    # Examples about a fact are trained this many times an epoch: a memory answer that states one, and a reply to an
    # input that carries a recalled one ("[key: value] ..."). A small model learns the commoner case first: mini's
    # persona adapter wrote a fact for 3 of 16 turns that state one, and rarely used a recalled value in its reply.
    fact_repeat: int = 1
    # More rows in the dataset's schema, checked and trained together with it (mini's memory adapter: rows of
    # lasting facts and passing remarks, ohlora/train/data/memory-facts.csv). The report names each file's sha256.
    extra_data: list[Path] = field(default_factory=list)
    resume: bool = False
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def build_examples(tokenizer: Any, rows: list[PersonaRow], tasks: list[str], dialect: Dialect,
                   fact_repeat: int = 1) -> list[Example]:
    """Prompt ids as served, then the answer's ids (and the end-of-turn / end-of-text token).

    An example about a fact appears `fact_repeat` times (TrainConfig.fact_repeat).
    """
    from ohlora.llm.engine import encode_prompt

    examples = []
    for row in rows:
        for task in tasks:
            spec = task_spec(task)
            prompt = spec.prompt(dialect, **row.fields(task))
            prompt_ids = encode_prompt(tokenizer, prompt)
            answer = answer_text(task, row.answer(task), dialect)
            answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [end_token_id(tokenizer, dialect)]
            copies = fact_repeat if about_a_fact(row, task) else 1
            examples += [Example(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)] * copies
    return examples


def about_a_fact(row: PersonaRow, task: str) -> bool:
    """A memory answer that states a fact, or a reply whose input carries a recalled one (it should use it)."""
    if task == "memory":
        return bool(row.memory)
    return task == "message" and bool(split_final_input(row.input_data).memory)


def end_token_id(tokenizer: Any, dialect: Dialect) -> int:
    """Where a trained answer ends: the chat template's end-of-turn token, else end-of-text (the original's)."""
    if dialect.chat_template:
        for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                return token_id
    if tokenizer.eos_token_id is None:
        raise ConfigError("the base's tokenizer has no end-of-text token to end an answer with")
    return int(tokenizer.eos_token_id)


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "attention_mask": [1] * len(example.input_ids), "labels": example.labels}


def answer_loss(model: Any, inputs: dict[str, torch.Tensor], num_items: int | torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over answer tokens, with the output layer applied to those positions only.

    Why not the model's own loss: it projects every position onto the vocabulary first. Qwen2.5's head is
    896 x 151,936 (a fifth of the 0.5B model's weights), and the answer is about a fifth of an example's
    tokens, so the full projection and its backward pass were the largest single cost of a CPU step.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    hidden = backbone(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return loss / (num_items if num_items is not None else keep.sum().clamp_min(1))


def base_sha256(base: str) -> str:
    """sha256 over the base's weight files (sorted by name), so a report names exactly what was trained on."""
    import hashlib

    folder = Path(base)
    if not folder.is_dir():
        from transformers.utils import cached_file

        config = cached_file(base, "config.json")
        if config is None:
            return "unknown"
        folder = Path(config).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def block_linear_names(model: torch.nn.Module) -> list[str]:
    """Names of the linear layers inside the transformer blocks (attention and MLP), not the output head."""
    in_blocks = (".layers.", ".h.", ".blocks.")  # llama/qwen/neox, gpt2, others
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and any(part in f".{name}" for part in in_blocks)})


def load_model(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """Base plus a fresh (or the given) LoRA adapter; any loading failure is one clear error."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.base, trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(config.base, dtype=dtype,
                                                     trust_remote_code=config.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the user
        raise ConfigError(f"the base model {config.base!r} does not load: {type(exc).__name__}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.base_adapter:
        model = merged_base_adapter(model, config.base_adapter, config.base)
    if config.init_adapter:
        try:
            model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"the adapter {config.init_adapter!r} does not load on {config.base!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
    else:
        layers = model.config.num_hidden_layers
        upper = config.upper_layers if 0 < config.upper_layers < layers else layers
        try:
            lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                              target_modules=config.target_modules or block_linear_names(model),
                              layers_to_transform=list(range(layers - upper, layers)), task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
        except ValueError as exc:
            raise ConfigError(f"LoRA does not fit this base: {exc}") from exc
    model.to(device)
    return model, tokenizer


def merged_base_adapter(model: Any, adapter: str, base: str) -> Any:
    """`model` with `adapter` merged into its weights, as the engine merges `llm.base_adapter` at load."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"the base adapter {adapter!r} does not load on {base!r}: {type(exc).__name__}: {exc}") from exc


def adapter_sha256(adapter: str) -> str:
    """sha256 of a local adapter's weights; "unknown" for a hub id (the report names it)."""
    weights = Path(adapter) / "adapter_model.safetensors"
    return sha256_file(weights) if weights.is_file() else "unknown"


def answer_trainer() -> type:
    """transformers' Trainer with `answer_loss` (everything else, from schedules to checkpoints, is the Trainer's)."""
    from transformers import Trainer

    class AnswerTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: int | torch.Tensor | None = None) -> Any:
            loss = answer_loss(model, inputs, num_items_in_batch)
            return (loss, (loss,)) if return_outputs else loss  # evaluation wants outputs; there are no logits

    return AnswerTrainer


def command_line(config: TrainConfig) -> str:
    """The `ohlora train` command that repeats this run, every setting spelt out (defaults may change)."""
    args = ["--base", config.base, "--data", str(config.data), "--out", str(config.out)]
    args += [a for task in config.tasks for a in ("--task", task)]
    args += ["--dialect", config.dialect.value, "--epochs", str(config.epochs), "--lr", str(config.learning_rate),
             "--batch-size", str(config.batch_size), "--rank", str(config.rank), "--alpha", str(config.alpha),
             "--upper-layers", str(config.upper_layers), "--max-steps", str(config.max_steps),
             "--save-steps", str(config.save_steps), "--seed", str(config.seed), "--dtype", config.dtype,
             "--device", config.device]
    args += [a for module in config.target_modules or [] for a in ("--target", module)]
    args += ["--init-adapter", config.init_adapter] if config.init_adapter else []
    args += ["--base-adapter", config.base_adapter] if config.base_adapter else []
    args += ["--fact-repeat", str(config.fact_repeat)] if config.fact_repeat != 1 else []
    args += [a for path in config.extra_data for a in ("--extra-data", str(path))]
    return "ohlora train " + shlex.join(args)


def checkpoint_dir(config: TrainConfig) -> Path:
    return config.out / CHECKPOINTS


def train(config: TrainConfig) -> dict[str, Any]:
    """Checks the data, trains, saves the adapter and a report next to it; returns the report."""
    from transformers import DataCollatorForSeq2Seq, TrainingArguments, set_seed

    from ohlora.bench import machine_info
    from ohlora.runtime.device import choose_dtype, resolve_device

    rows = load_checked([config.data, *config.extra_data], config.tasks, config.dialect)
    if config.resume and not any(checkpoint_dir(config).glob("checkpoint-*")):
        raise ConfigError(f"--resume: no checkpoint under {checkpoint_dir(config)} to resume from")
    if not config.resume and any(checkpoint_dir(config).glob("checkpoint-*")):
        raise ConfigError(f"{checkpoint_dir(config)} holds checkpoints of an earlier run: add --resume to go on, "
                          "or choose another --out")
    set_seed(config.seed)
    device = resolve_device(config.device)
    choice = choose_dtype(config.dtype, device)
    model, tokenizer = load_model(config, device, choice.dtype)
    train_set = ExampleDataset(build_examples(tokenizer, [r for r in rows if r.data_type == "train"], config.tasks,
                                              config.dialect, config.fact_repeat))
    valid_set = ExampleDataset(build_examples(tokenizer, [r for r in rows if r.data_type == "valid"], config.tasks,
                                              config.dialect))
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    args = TrainingArguments(
        output_dir=str(checkpoint_dir(config)),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps_per_epoch // 10),
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(10, steps_per_epoch // 4)),
        seed=config.seed,
        data_seed=config.seed,
        bf16=choice.dtype == torch.bfloat16,
        use_cpu=device.type == "cpu",
        train_sampling_strategy="group_by_length",  # fewer pad tokens per batch: on a CPU every padded token costs as much as a real one
        remove_unused_columns=False,
        prediction_loss_only=True,
        report_to="none",
        dataloader_num_workers=0,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE, pad_to_multiple_of=None)
    trainer = answer_trainer()(model=model, args=args, train_dataset=train_set, eval_dataset=valid_set, data_collator=collator)
    first_step = max((int(p.name.split("-")[1]) for p in checkpoint_dir(config).glob("checkpoint-*")), default=0)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if config.resume else None)
    elapsed = time.perf_counter() - started
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    # The epoch's own evaluation, when training ended on an epoch; else (--max-steps mid-epoch) one more pass.
    final_eval = evals[-1] if evals and evals[-1].get("step") == trainer.state.global_step else trainer.evaluate()
    config.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(config.out))
    adapter_file = config.out / "adapter_model.safetensors"
    history = trainer.state.log_history
    mean_tokens = sum(len(e.input_ids) for e in train_set.examples) / max(1, len(train_set))
    sitting_tokens = mean_tokens * config.batch_size * (trainer.state.global_step - first_step)
    report_path = config.out / REPORT_FILE
    earlier = json.loads(report_path.read_text()).get("sittings", []) if config.resume and report_path.exists() else []
    sittings = [*earlier, {"steps": trainer.state.global_step - first_step, "seconds": round(elapsed, 1),
                           "tokens_per_second": round(sitting_tokens / elapsed, 1) if elapsed > 0 else None}]
    report = {
        "command": command_line(config),
        "config": {k: (v.value if isinstance(v, Dialect) else str(v) if isinstance(v, Path) else
                       [str(p) for p in v] if k == "extra_data" else v) for k, v in asdict(config).items()},
        "base": config.base,
        "base_sha256": base_sha256(config.base),
        "base_adapter_sha256": adapter_sha256(config.base_adapter) if config.base_adapter else None,
        "data": config.data.name,
        "data_sha256": sha256_file(config.data),
        "extra_data": [{"data": path.name, "sha256": sha256_file(path)} for path in config.extra_data],
        "adapter_sha256": sha256_file(adapter_file),
        "adapter_bytes": adapter_file.stat().st_size,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_examples": len(train_set),
        "valid_examples": len(valid_set),
        "epochs": trainer.state.epoch,
        "steps": trainer.state.global_step,
        "seconds": round(sum(s["seconds"] for s in sittings), 1),
        "tokens_per_second": sittings[-1]["tokens_per_second"],
        "sittings": sittings,
        "final_train_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "final_valid_loss": final_eval.get("eval_loss"),
        "valid_loss_per_epoch": [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h],
        "train_loss_log": [(h["step"], h["loss"]) for h in history if "loss" in h],
        "machine": {**machine_info(), "dtype": choice.name, "device": str(device)},
    }
    report_path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return report
