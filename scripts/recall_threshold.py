"""Measures the mini preset's memory-recall threshold on the project's calibration set.

    python scripts/recall_threshold.py                 # the table in docs/models.md
    python scripts/recall_threshold.py --misses 0.5    # also every turn that goes wrong at 0.5
    python scripts/recall_threshold.py --json out.json # the table and the machine, as JSON
    python scripts/recall_threshold.py --lexical-weight 0   # cosine alone (the original's rule)
    python scripts/recall_threshold.py --embedder <models>/mini/multilingual-e5-small-st \
        --adapter my-recall --thresholds 0.3:0.7:0.01  # another embedder, a recall adapter merged first

Why: the gateway puts the stored memory with the highest score in front of a turn when that score reaches the
embedder's threshold (gateway.recall.best_memory: the cosine plus `lexical_weight` times the share of the memory's
words found in the turn), so the threshold decides whether Oh-LoRA remembers or talks about
an unrelated fact, and each embedder needs its own (e5 alone packed every Korean pair into 0.80-0.90; with the
recall adapter the top-1 cosines spread over about 0.4-0.7). This scores the calibration set
(ohlora/train/data/recall_calibration.json: 40 memories of one user, for each two turns that should recall it and
two that should recall nothing) exactly as the gateway does: the user's text through the gateway's model_text,
without a leading "로라야", as a "query: ", the memory lines as "passage: ", all 40 stored together, top-1 score
against each threshold. The embedder is the prepared preset's (`ohlora models prepare mini`), loaded as the memory
service loads it (sentence-transformers, its query/passage prompts, L2-normalised; services.llm_memory.embedder).
The last column is the same turns for a user with one memory stored (a short conversation), where no wrong memory
can come up and an unrelated turn meets one memory instead of forty: why a threshold that looks right there floods a
user with many memories with false recalls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

CALIBRATION_JSON = REPO_ROOT / "ohlora" / "train" / "data" / "recall_calibration.json"
DEFAULT_THRESHOLDS = "0.40:0.60:0.01"  # where the preset's embedder (e5 + the recall adapter) puts its top-1 cosines


@dataclass(frozen=True)
class Calibration:
    memories: list[str]
    recall_turns: list[str]
    recall_targets: list[int]  # index into memories, one per recall turn
    unrelated_turns: list[str]


@dataclass(frozen=True)
class Scores:
    """Recall scores of every turn against every stored memory (rows: turns, columns: memories): the cosine plus
    the lexical weight times the word overlap, as gateway.recall scores them."""

    memories: list[str]
    recall_turns: list[str]
    recall_targets: np.ndarray
    recall: np.ndarray
    unrelated_turns: list[str]
    unrelated: np.ndarray


@dataclass(frozen=True)
class Rates:
    threshold: float
    right: int  # should-recall turns whose recalled memory is the right one
    missed: int  # should-recall turns that recall nothing
    wrong: int  # should-recall turns that recall another memory
    recall_turns: int
    false: int  # unrelated turns that recall something
    unrelated_turns: int

    @property
    def right_share(self) -> float:
        return self.right / self.recall_turns

    @property
    def wrong_share(self) -> float:
        return self.wrong / self.recall_turns

    @property
    def false_share(self) -> float:
        return self.false / self.unrelated_turns

    @property
    def bad_recalls(self) -> int:
        """Turns that get a memory they should not: a wrong one, or any on an unrelated turn."""
        return self.wrong + self.false


def load_calibration(path: Path = CALIBRATION_JSON) -> Calibration:
    data = json.loads(path.read_text(encoding="utf-8"))
    memories = [entry["memory"] for entry in data["memories"]]
    recall_turns, targets, unrelated = [], [], []
    for n, entry in enumerate(data["memories"]):
        recall_turns += entry["recall"]
        targets += [n] * len(entry["recall"])
        unrelated += entry["unrelated"]
    return Calibration(memories, recall_turns, targets, unrelated)


def embedder_dir(models: Path | None = None) -> Path:
    """The prepared preset's embedder: multilingual-e5-small with the recall adapter merged."""
    from ohlora.presets import default_models_dir
    from ohlora.presets.mini import MiniPreset

    return MiniPreset(models or default_models_dir() / "mini").embedder


def load_embedder(folder: Path, adapter: Path | None = None) -> object:
    """The memory service's Embedder on the prepared model (torch backend; the onnx one gives the same vectors
    within 1e-4, tests/test_mini.py), with a recall adapter merged in if one is given."""
    from sentence_transformers import SentenceTransformer

    from ohlora.presets.mini import RECALL_THRESHOLD
    from ohlora.train.recall import merge_recall_adapter
    from services.llm_memory.embedder import Embedder

    model = SentenceTransformer(str(folder), device="cpu")
    if adapter is not None:
        model = merge_recall_adapter(model, adapter)
    return Embedder(model, folder.name, RECALL_THRESHOLD)


def score(calibration: Calibration, embedder: object, lexical_weight: float) -> Scores:
    """Every turn as the gateway embeds it (model_text without the address, kind "query") against every memory
    (kind "passage"), plus the weighted word overlap of the same text, as gateway.recall.recall_scores scores them."""
    from gateway.inputs import model_text
    from gateway.recall import recall_scores
    from ohlora.llm.persona import without_address

    def scored(turns: list[str]) -> np.ndarray:
        texts = [without_address(model_text(t)) for t in turns]
        cosines = encode(texts, "query") @ memories.T
        return np.array([recall_scores(c, t, calibration.memories, lexical_weight) for c, t in zip(cosines, texts)])

    encode = embedder.encode  # type: ignore[attr-defined]
    memories = encode(calibration.memories, "passage")
    return Scores(calibration.memories, calibration.recall_turns, np.asarray(calibration.recall_targets),
                  scored(calibration.recall_turns), calibration.unrelated_turns, scored(calibration.unrelated_turns))


def recalled(scores: np.ndarray, memories: list[str], threshold: float) -> str:
    """The gateway's rule on precomputed scores (gateway.recall.best_memory; ties go to the greatest text)."""
    top = scores.max()
    if not float(top) >= threshold:
        return ""
    return max(memories[n] for n in np.flatnonzero(scores == top))


def rates(scores: Scores, threshold: float) -> Rates:
    right = missed = wrong = 0
    for row, target in zip(scores.recall, scores.recall_targets):
        got = recalled(row, scores.memories, threshold)
        if got == scores.memories[int(target)]:
            right += 1
        elif got == "":
            missed += 1
        else:
            wrong += 1
    false = sum(recalled(row, scores.memories, threshold) != "" for row in scores.unrelated)
    return Rates(threshold, right, missed, wrong, len(scores.recall_turns), false, len(scores.unrelated_turns))


@dataclass(frozen=True)
class OneMemory:
    """The same turns for a user with a single stored memory (a short conversation): a should-recall turn recalls
    when its own memory's score reaches the threshold; an unrelated turn, averaged over which one memory is stored."""

    threshold: float
    right_share: float
    false_share: float


def one_memory(scores: Scores, threshold: float) -> OneMemory:
    own = scores.recall[np.arange(len(scores.recall_turns)), scores.recall_targets]
    return OneMemory(threshold, float((own >= threshold).mean()), float((scores.unrelated >= threshold).mean()))


def machine() -> dict[str, object]:
    import sentence_transformers
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__}


def threshold_range(spec: str) -> list[float]:
    """"start:stop:step" -> the thresholds from start to stop inclusive."""
    start, stop, step = (float(x) for x in spec.split(":"))
    return [round(start + step * i, 4) for i in range(int(round((stop - start) / step)) + 1)]


def table(rows: list[Rates], single: list[OneMemory], current: float | None = None) -> str:
    """Markdown: all memories stored (the choice), then the one-memory view; `current` is marked."""
    lines = ["| threshold | right recalls | missed | wrong memory | unrelated turns recalling one | bad recalls "
             "(wrong + unrelated) | one memory stored: right / unrelated recalling |",
             "|---|---|---|---|---|---|---|"]
    for r, one in zip(rows, single):
        mark = " (preset)" if current is not None and abs(r.threshold - current) < 1e-9 else ""
        lines.append(f"| {r.threshold:.3f}{mark} | {r.right}/{r.recall_turns} ({r.right_share:.0%}) | {r.missed} | "
                     f"{r.wrong} ({r.wrong_share:.0%}) | {r.false}/{r.unrelated_turns} ({r.false_share:.0%}) | "
                     f"{r.bad_recalls} | {one.right_share:.0%} / {one.false_share:.1%} |")
    return "\n".join(lines)


def misses(scores: Scores, threshold: float) -> list[str]:
    """Every turn that goes wrong at `threshold`, with its top score and what it recalled."""
    out = []
    for turn, row, target in zip(scores.recall_turns, scores.recall, scores.recall_targets):
        got = recalled(row, scores.memories, threshold)
        want = scores.memories[int(target)]
        if got != want:
            out.append(f"should recall {want} ({row[int(target)]:.3f}): {turn!r} -> {got or 'nothing'} "
                       f"({row.max():.3f})")
    for turn, row in zip(scores.unrelated_turns, scores.unrelated):
        got = recalled(row, scores.memories, threshold)
        if got:
            out.append(f"unrelated: {turn!r} -> {got} ({row.max():.3f})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="the mini preset's folder (default: <models>/mini)")
    parser.add_argument("--data", type=Path, default=CALIBRATION_JSON)
    parser.add_argument("--embedder", type=Path, default=None, help="an embedder folder (default: the mini preset's)")
    parser.add_argument("--adapter", type=Path, default=None, help="merge this recall adapter (ohlora train-recall) first")
    parser.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="start:stop:step of the thresholds tried "
                        "(e5 alone packs its cosines into 0.80-0.90: 0.80:0.88:0.005)")
    parser.add_argument("--lexical-weight", type=float, default=None,
                        help="weight of the word overlap added to the cosine (default: the preset's)")
    parser.add_argument("--misses", type=float, default=None, help="list the turns that go wrong at this threshold")
    parser.add_argument("--json", type=Path, default=None, help="also write the table and the machine here")
    args = parser.parse_args(argv)

    folder = args.embedder or embedder_dir(args.models)
    if not folder.is_dir():
        print(f"{folder} is missing: run `ohlora models prepare mini` first", file=sys.stderr)
        return 2
    from ohlora.presets.mini import RECALL_LEXICAL_WEIGHT, RECALL_THRESHOLD

    weight = RECALL_LEXICAL_WEIGHT if args.lexical_weight is None else args.lexical_weight
    scores = score(load_calibration(args.data), load_embedder(folder, args.adapter), weight)
    thresholds = threshold_range(args.thresholds)
    rows = [rates(scores, t) for t in thresholds]
    single = [one_memory(scores, t) for t in thresholds]
    ranked = int((scores.recall.argmax(1) == scores.recall_targets).sum())
    print(f"{len(scores.memories)} memories, {len(scores.recall_turns)} should-recall turns, "
          f"{len(scores.unrelated_turns)} unrelated turns; the right memory ranks first for {ranked} of "
          f"{len(scores.recall_turns)} (any threshold)")
    print(f"lexical weight {weight}; top-1 score: should-recall turns {np.percentile(scores.recall.max(1), [10, 50, 90]).round(3)} "
          f"(10/50/90th percentile), unrelated turns {np.percentile(scores.unrelated.max(1), [10, 50, 90]).round(3)}")
    print(table(rows, single, RECALL_THRESHOLD))
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    if args.misses is not None:
        print(f"\nturns that go wrong at {args.misses}:")
        print("\n".join(misses(scores, args.misses)))
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "lexical_weight": weight, "ranked_first": ranked, "rows": [
            {**asdict(r), "right_share": r.right_share, "false_share": r.false_share} for r in rows],
            "one_memory": [asdict(one) for one in single]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
