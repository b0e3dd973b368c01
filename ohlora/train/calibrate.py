"""`ohlora train-calibrate`: the threshold a tuned task's opening is decided by, measured on rows the adapter never saw.

The memory adapter's first token says "a fact follows" ("[") or "nothing". Sampled, the choice follows the model's
odds, and on mini's 0.5B base those odds rank facts above remarks well (an AUC near 0.9 on the valid split) but sit
on the wrong side of one half for a third of the facts. The threshold that best separates them on held-out rows
(the mean of the two classes' shares, "balanced accuracy") is written into the adapter's folder; the engine then
decides the opening by it (ohlora.llm.task.Opening). The rows must not be the adapter's training data, nor the
evaluation split: the command refuses a file the adapter's training report names.
"""

from __future__ import annotations

import json
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ohlora.errors import ConfigError
from ohlora.llm.calibration import CALIBRATION_FILE
from ohlora.llm.task import Dialect
from ohlora.train.dataset import answer_text, load_checked, sha256_file, task_spec


@dataclass
class CalibrateConfig:
    data: list[Path]
    settings_file: Path  # the served configuration: base, merged adapter, the task's adapter, output vocabulary
    task: str = "memory"


@dataclass(frozen=True)
class Threshold:
    value: float
    opened_share: float  # of the rows whose answer opens with the text, the share at or above the threshold
    other_share: float  # of the others, the share below it

    @property
    def balanced_accuracy(self) -> float:
        return (self.opened_share + self.other_share) / 2


def require_both_kinds(opens: list[bool]) -> None:
    if all(opens) or not any(opens):
        raise ConfigError("calibration needs rows of both kinds: answers that open with the text and answers that do not")


def shares(probabilities: list[float], opens: list[bool], cut: float) -> Threshold:
    """How a cut sorts the rows: each kind's share on its own side."""
    require_both_kinds(opens)
    positives = [p for p, o in zip(probabilities, opens) if o]
    negatives = [p for p, o in zip(probabilities, opens) if not o]
    return Threshold(cut, sum(p >= cut for p in positives) / len(positives),
                     sum(p < cut for p in negatives) / len(negatives))


def best_threshold(probabilities: list[float], opens: list[bool]) -> Threshold:
    """The cut with the highest balanced accuracy; among equal ones, the middle one.

    Candidates lie halfway between neighbouring measured probabilities, so no row sits on a cut.
    """
    levels = sorted(set(probabilities))
    cuts = [(a + b) / 2 for a, b in zip(levels, levels[1:])] or [levels[0]]
    scored = [shares(probabilities, opens, cut) for cut in cuts]
    best = max(t.balanced_accuracy for t in scored)
    tied = [t for t in scored if t.balanced_accuracy == best]
    return tied[len(tied) // 2]


def trained_on(adapter: Path) -> set[str]:
    """sha256 of every data file the adapter's training report names (dataset and extra data)."""
    report_path = adapter / "training-report.json"
    if not report_path.is_file():
        return set()
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return {report.get("data_sha256", "")} | {extra.get("sha256", "") for extra in report.get("extra_data", [])}


def calibrate(config: CalibrateConfig) -> dict[str, Any]:
    """Measures, chooses, writes `calibration.json` into the task's adapter folder; returns what it wrote."""
    from ohlora.bench import machine_info
    from ohlora.config import load_settings
    from ohlora.llm.engine import LLMEngine
    from ohlora.llm.host import LLMHost
    from ohlora.train.sft import adapter_sha256

    settings = load_settings(config.settings_file)
    spec = task_spec(config.task)
    opening = spec.settings_for(Dialect.TUNED).opening
    if opening is None:
        raise ConfigError(f"the {config.task} task has no opening to calibrate")
    if settings.llm.dialect_of(config.task) is not Dialect.TUNED:
        raise ConfigError(f"{config.settings_file}: the {config.task} task must use the tuned dialect to be calibrated")
    adapter_name = settings.llm.task(config.task).adapter
    if adapter_name is None or not Path(adapter_name).is_dir():
        raise ConfigError(f"{config.settings_file}: the {config.task} task needs an adapter folder, not {adapter_name!r}")
    adapter = Path(adapter_name)
    seen = trained_on(adapter)
    hashes = {str(path): sha256_file(path) for path in config.data}
    for path, digest in hashes.items():
        if digest in seen:
            raise ConfigError(f"{path}: the adapter {adapter} was trained on this file; calibrate on rows it never saw")
    # Train rows only: a valid split is what the benchmark evaluates on.
    rows = [r for r in load_checked(config.data, [config.task], Dialect.TUNED, needed=("train",))
            if r.data_type == "train"]
    opens = [answer_text(config.task, row.answer(config.task), Dialect.TUNED).startswith(opening.text) for row in rows]
    require_both_kinds(opens)  # before the model loads
    engine = LLMEngine.load(LLMHost(settings, [config.task]).engine_config())
    loaded = engine.aliases.get(config.task, config.task)
    probabilities = [engine.next_token_probability(spec.prompt(Dialect.TUNED, **row.fields(config.task)), loaded,
                                                   opening.text) for row in rows]
    chosen = best_threshold(probabilities, opens)
    sampled = shares(probabilities, opens, 0.5)
    result = {
        "opening": {"text": opening.text, "threshold": round(chosen.value, 4)},
        "task": config.task,
        "rows": {"opening": sum(opens), "other": len(opens) - sum(opens)},
        "opened_share": round(chosen.opened_share, 4),
        "other_share": round(chosen.other_share, 4),
        "balanced_accuracy": round(chosen.balanced_accuracy, 4),
        "at_one_half": {"opened_share": round(sampled.opened_share, 4), "other_share": round(sampled.other_share, 4)},
        "median_probability": {"opening": statistics.median(p for p, o in zip(probabilities, opens) if o),
                               "other": statistics.median(p for p, o in zip(probabilities, opens) if not o)},
        "data": [{"file": Path(path).name, "sha256": digest} for path, digest in hashes.items()],
        "adapter_sha256": adapter_sha256(str(adapter)),
        "served_with": {"base": settings.llm.base_model, "base_adapter": settings.llm.base_adapter,
                        "output_vocabulary": settings.llm.output_vocabulary},
        "command": "ohlora train-calibrate " + shlex.join(
            [a for path in config.data for a in ("--data", str(path))] + ["--config", str(config.settings_file),
                                                                          "--task", config.task]),
        "machine": {**machine_info(), "dtype": str(next(engine.model.parameters()).dtype).removeprefix("torch.")},
    }
    (adapter / CALIBRATION_FILE).write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return result
