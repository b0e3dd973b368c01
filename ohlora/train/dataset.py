"""A persona dataset: one table, one row per turn, one column per task's output (the original's shape).

Columns: data_type (train/valid), input_data (the turn's final input, with a recalled memory or the last
summary in front as the gateway builds it), output_message (the reply), memory ("[key: value]" or empty),
summary, eyes_mouth_pose. Each task reads its prompt fields and its answer from a row; every answer must be
accepted by the parser the service itself uses, so nothing is trained that the service would reject.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ohlora.config import TASK_NAMES
from ohlora.errors import ConfigError
from ohlora.llm.final_input import split_final_input
from ohlora.llm.task import ANSWER_END, Attempt, Dialect, Reject, TaskSpec

COLUMNS = ("data_type", "input_data", "output_message", "memory", "summary", "eyes_mouth_pose")
SPLITS = ("train", "valid")
# The column each task learns to write.
ANSWER_COLUMN = {"message": "output_message", "memory": "memory", "summary": "summary", "pose": "eyes_mouth_pose"}
# The project's own dataset, written for it in Oh-LoRA's voice (docs/training.md), and its evaluation scenarios.
DATA_DIR = Path(__file__).parent / "data"
PERSONA_CSV = DATA_DIR / "persona.csv"
SCENARIOS_JSON = DATA_DIR / "scenarios.json"
# Scenarios held out by fact, not only by sentence: no value of theirs appears in any train row.
UNSEEN_SCENARIOS_JSON = DATA_DIR / "scenarios-unseen.json"
# Lasting facts and passing remarks, train only: the rows `ohlora train-calibrate` calibrated the shipped memory
# adapter's opening on (it was not trained on them), and extra data for a retrain (`ohlora train --extra-data`).
MEMORY_FACTS_CSV = DATA_DIR / "memory-facts.csv"
# Lasting facts of the keys the memory adapter filed worst on those held-out rows (jobs, goals, moves, colours,
# sports…), phrased as people say them, and passing remarks, train only: extra data for the memory adapter. None of
# its values is one of memory-facts.csv's, which stays held out for it.
LASTING_FACTS_CSV = DATA_DIR / "lasting-facts.csv"


class DatasetError(ConfigError):
    """The dataset cannot be trained on; the message names the column, split or row."""


@dataclass(frozen=True)
class PersonaRow:
    line: int  # line in the CSV file (the header is line 1), for messages
    data_type: str
    input_data: str
    output_message: str
    memory: str
    summary: str
    eyes_mouth_pose: str
    source: str = ""  # the file's name, for messages about rows from several files

    def fields(self, task: str) -> dict[str, str]:
        """The task's request fields, as the gateway sends them (the reply with the original's leading space)."""
        reply = " " + self.output_message
        return {
            "message": {"final_input": self.input_data},
            "memory": {"final_input": self.input_data},
            "summary": {"final_input": self.input_data, "reply": reply},
            "pose": {"reply": reply},
        }[task]

    def answer(self, task: str) -> str:
        return str(getattr(self, ANSWER_COLUMN[task]))


def task_spec(task: str) -> TaskSpec:
    from services.llm_memory.task import EXTRACT_TASK
    from services.llm_message.task import REPLY_TASK
    from services.llm_pose.task import POSE_TASK
    from services.llm_summary.task import SUMMARY_TASK

    return {spec.name: spec for spec in (REPLY_TASK, EXTRACT_TASK, SUMMARY_TASK, POSE_TASK)}[task]


def answer_text(task: str, answer: str, dialect: Dialect) -> str:
    """What the model is trained to write for `answer`, in the shape the dialect's parser reads back.

    Original: " answer (답변 종료)", the published adapters' form (nothing to remember = " (답변 종료)").
    Chat dialects: the answer alone; the memory task's nothing is written as its explicit word.
    """
    if dialect is Dialect.ORIGINAL:
        return f" {answer} {ANSWER_END}" if answer else f" {ANSWER_END}"
    if task == "memory" and not answer:
        from services.llm_memory.task import NOTHING

        return NOTHING
    return answer


def check_answer(task: str, answer: str, dialect: Dialect) -> None:
    """Raises Reject when the service's own parser would not accept the trained answer."""
    spec = task_spec(task)
    text = answer_text(task, answer, dialect)
    if dialect is Dialect.ORIGINAL:
        text = text.replace(ANSWER_END, "")
    value = spec.parse(Attempt(spec.adapt(dialect, text), 1, 0, 0))
    if task == "memory" and answer and (value is None or value.text != answer):
        raise Reject(f"the memory parser reads {answer!r} as {value!r}: write it as the parser normalises it")
    if task == "message" and value.strip() != answer:
        raise Reject(f"the reply parser changes it to {value!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_rows(path: Path) -> list[PersonaRow]:
    """Reads the table; a missing file or column is an error that names it."""
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"dataset {path} lacks the column(s) {', '.join(missing)}; columns: {', '.join(COLUMNS)}")
        return [PersonaRow(n, *(row[c] or "" for c in COLUMNS), source=path.name) for n, row in enumerate(reader, start=2)]


def problems(rows: list[PersonaRow], tasks: list[str], dialect: Dialect, memory_keys: tuple[str, ...] | None = None,
             needed: tuple[str, ...] = SPLITS) -> list[str]:
    """Everything wrong with the rows for these tasks, one line each, naming the row: empty if trainable.

    `needed`: the splits that must have rows (training needs both; a calibration reads train rows only)."""
    found: list[str] = []
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown:
        return [f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASK_NAMES)}"]
    for split in needed:
        if not any(r.data_type == split for r in rows):
            found.append(f"the {split} split is empty (data_type column)")
    seen: dict[str, PersonaRow] = {}
    several = len({r.source for r in rows}) > 1

    def line(row: PersonaRow) -> str:
        return f"{row.source} line {row.line}" if several else f"line {row.line}"

    for row in rows:
        where = line(row)
        if row.data_type not in SPLITS:
            found.append(f"{where}: data_type {row.data_type!r} is neither train nor valid")
        if not row.input_data.strip():
            found.append(f"{where}: empty input_data")
        first = seen.setdefault(row.input_data, row)
        if first is not row:
            both = "in train and valid" if first.data_type != row.data_type else "twice"
            found.append(f"{where}: input {row.input_data!r} appears {both} (also {line(first)})")
        for task in tasks:
            answer = row.answer(task)
            if task != "memory" and not answer.strip():
                found.append(f"{where}: empty {ANSWER_COLUMN[task]}")
                continue
            try:
                check_answer(task, answer, dialect)
            except Reject as exc:
                found.append(f"{where}: {ANSWER_COLUMN[task]} {answer!r} is rejected by the {task} parser: {exc}")
        if memory_keys is not None:
            turn = split_final_input(row.input_data)
            for memory in (row.memory, turn.memory):
                if memory and memory[1:].split(":")[0].strip() not in memory_keys:
                    found.append(f"{where}: memory key of {memory!r} is not in the vocabulary")
    return found


def load_checked(paths: list[Path], tasks: list[str], dialect: Dialect, needed: tuple[str, ...] = SPLITS
                 ) -> list[PersonaRow]:
    """The rows of every file together, or a DatasetError listing (the first 20 of) every problem before any training
    starts. The files are checked as one dataset: an input in two of them is a duplicate, each needed split needs
    rows."""
    rows = [row for path in paths for row in load_rows(path)]
    found = problems(rows, tasks, dialect, needed=needed)
    if found:
        more = f"\n  … and {len(found) - 20} more" if len(found) > 20 else ""
        names = " + ".join(str(p) for p in paths)
        raise DatasetError(f"dataset {names} cannot be trained on:\n  " + "\n  ".join(found[:20]) + more)
    return rows
