"""`ohlora train` and the persona dataset: the lint, the checks before training, a real short run on the tiny preset."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ohlora.cli import app
from ohlora.config import TASK_NAMES
from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.final_input import split_final_input
from ohlora.llm.persona import MEMORY_KEYS
from ohlora.llm.task import Dialect
from ohlora.train.dataset import (COLUMNS, LASTING_FACTS_CSV, MEMORY_FACTS_CSV, PERSONA_CSV, SCENARIOS_JSON,
                                  UNSEEN_SCENARIOS_JSON, PersonaRow, load_rows, problems, sha256_file)
from ohlora.train.sft import IGNORE, build_examples

runner = CliRunner()


# ------------------------------------------------------------------ the dataset
@pytest.fixture(scope="module")
def persona_rows():
    return load_rows(PERSONA_CSV)


def test_persona_dataset_size_and_splits(persona_rows):
    train = [r for r in persona_rows if r.data_type == "train"]
    valid = [r for r in persona_rows if r.data_type == "valid"]
    assert len(train) >= 800 and len(valid) >= 150
    assert not {r.input_data for r in train} & {r.input_data for r in valid}
    with_fact = sum(bool(r.memory) for r in persona_rows)
    assert 0.3 < with_fact / len(persona_rows) < 0.6  # about as many turns with nothing to remember as with a fact
    prefixed = [split_final_input(r.input_data) for r in persona_rows]
    assert sum(bool(t.memory) for t in prefixed) >= 100 and sum(bool(t.summary) for t in prefixed) >= 100


@pytest.mark.parametrize("dialect", [Dialect.TUNED, Dialect.ORIGINAL])
def test_persona_dataset_passes_the_services_parsers(persona_rows, dialect):
    assert problems(persona_rows, list(TASK_NAMES), dialect, memory_keys=MEMORY_KEYS) == []


def test_persona_replies_are_informal(persona_rows):
    from ohlora.bench.mini import is_informal

    formal = [r.output_message for r in persona_rows if not is_informal(r.output_message)]
    assert formal == []


def test_scenarios_are_held_out(persona_rows):
    scenarios = json.loads(SCENARIOS_JSON.read_text())
    assert len(scenarios) >= 10
    inputs = {r.input_data for r in persona_rows}
    for s in scenarios:
        assert s["key"] in MEMORY_KEYS and s["value"]
        assert s["first"] not in inputs and s["second"] not in inputs


def test_unseen_scenarios_are_held_out_by_fact(persona_rows):
    """scenarios-unseen.json: no value (or word of one) appears in any row of the dataset (either split, the extra
    rows included) or in the recall calibration; the sentences are new too."""
    unseen = json.loads(UNSEEN_SCENARIOS_JSON.read_text())
    assert len(unseen) >= 10
    dataset = "\n".join(" ".join((r.input_data, r.output_message, r.memory, r.summary))
                        for r in persona_rows + load_rows(MEMORY_FACTS_CSV) + load_rows(LASTING_FACTS_CSV))
    calibration = (UNSEEN_SCENARIOS_JSON.parent / "recall_calibration.json").read_text()
    for s in unseen:
        assert s["key"] in MEMORY_KEYS and s["value"]
        for word in [s["value"], *s["value"].split()]:
            assert word not in dataset and word not in calibration, word
        assert s["first"] not in dataset and s["second"] not in dataset
    assert not {s["first"] for s in unseen} & {s["first"] for s in json.loads(SCENARIOS_JSON.read_text())}


def test_each_scenario_set_runs_under_valid_user_ids():
    """mini-quality talks to the gateway as one user per scenario, named after its set."""
    from gateway.auth import USER_ID
    from ohlora.bench.mini import SCENARIO_RESULTS, SCENARIO_SETS

    assert SCENARIO_SETS.keys() == SCENARIO_RESULTS.keys()
    assert all(USER_ID.match(f"{name}-15") for name in SCENARIO_SETS)


@pytest.mark.parametrize("extra_csv", [MEMORY_FACTS_CSV, LASTING_FACTS_CSV], ids=lambda p: p.name)
def test_the_extra_memory_rows_join_the_dataset_cleanly(persona_rows, extra_csv: Path):
    """memory-facts.csv calibrates the shipped memory adapter's opening (which never trained on it); lasting-facts.csv
    is extra data it was trained on. Each is checked with persona.csv as one dataset, train rows only (the evaluation
    stays persona.csv's valid split), and no rephrasing of a valid input."""
    from difflib import SequenceMatcher

    from ohlora.bench.mini import is_informal

    extra = load_rows(extra_csv)
    assert len(extra) >= 100 and {r.data_type for r in extra} == {"train"}
    # Lasting facts and passing remarks, both kinds in numbers (a calibration weighs each kind's share equally).
    assert 0.45 < sum(bool(r.memory) for r in extra) / len(extra) < 0.7
    for dialect in (Dialect.TUNED, Dialect.ORIGINAL):
        assert problems(persona_rows + extra, list(TASK_NAMES), dialect, memory_keys=MEMORY_KEYS) == []
    assert all(is_informal(r.output_message) for r in extra)
    valid = [r.input_data for r in persona_rows if r.data_type == "valid"]
    # The closest pair is 0.79: "로라야 너 요즘 뭐에 빠졌어?" (a question to her) against "로라야 나 요즘 뉴진스에 빠졌어".
    close = [(r.input_data, v) for r in extra for v in valid if SequenceMatcher(None, r.input_data, v).ratio() >= 0.8]
    assert close == []
    # Nor a fact of the two-turn scenarios (mini-quality): no scenario's value, or word of it, anywhere in a row.
    scenario_words = {w for s in json.loads(SCENARIOS_JSON.read_text()) for w in [s["value"], *s["value"].split()]
                      if len(w) >= 2}
    leaks = [(w, r.input_data) for r in extra for w in scenario_words
             if w in " ".join((r.input_data, r.output_message, r.memory, r.summary))]
    assert leaks == []


def test_the_lasting_facts_leave_the_held_out_rows_held_out(persona_rows):
    """lasting-facts.csv trains the memory adapter that memory-facts.csv calibrates: no input of the one in the other,
    no value of a memory-facts.csv fact among its memories, and no value of a valid fact (the bench's evaluation)
    that the train split does not already have (`[연인: 여자친구]` is in both splits)."""
    from services.llm_memory.task import to_fact

    held_out = load_rows(MEMORY_FACTS_CSV)
    lasting = load_rows(LASTING_FACTS_CSV)
    assert not {r.input_data for r in lasting} & {r.input_data for r in held_out}

    def values(rows: list[PersonaRow]) -> set[str]:
        return {fact.value for r in rows if (fact := to_fact(r.memory))}

    trained = " ".join(r.memory for r in persona_rows if r.data_type == "train")
    valid = values([r for r in persona_rows if r.data_type == "valid"])
    kept_out = {v for v in valid if v not in trained} | values(held_out)
    assert [(v, r.memory) for r in lasting if (fact := to_fact(r.memory)) for v in kept_out if v in fact.value] == []


def test_lint_names_the_bad_rows(tmp_path):
    path = write_rows(tmp_path / "bad.csv", [
        ("train", "로라야 안녕", "안녕! 오늘 어땠어?", "", "인사", "(눈 보통, 입 보통, 고개 돌림 없음)"),
        ("train", "로라야 안녕", "안녕!", "", "인사", "(눈 보통, 입 보통, 고개 돌림 없음)"),
        ("valid", "나 내일 면접", "헐 면접? 화이팅!", "[내일 일정 면접]", "면접 응원", "(눈 크게, 입 크게, 고개 돌림 없음)"),
        ("valid", "나 고양이 키워", "고양이 좋다!", "[애완: 고양이]", "고양이 부러움", "(눈 커다랗게, 입 보통, 고개 돌림 없음)"),
    ])
    found = problems(load_rows(path), list(TASK_NAMES), Dialect.TUNED, memory_keys=MEMORY_KEYS)
    text = "\n".join(found)
    assert "line 3: input '로라야 안녕' appears twice (also line 2)" in text
    assert "line 4: memory '[내일 일정 면접]' is rejected by the memory parser" in text
    assert "line 5: eyes_mouth_pose" in text and "line 5: memory key of '[애완: 고양이]'" in text
    assert len(found) == 5  # the malformed memory also has no key from the vocabulary


# ------------------------------------------------------------------ examples
def test_examples_mask_the_prompt_and_end_the_answer(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    rows = load_rows(PERSONA_CSV)[:3]
    for dialect in (Dialect.TUNED, Dialect.ORIGINAL):
        examples = build_examples(tokenizer, rows, ["memory"], dialect)
        for row, example in zip(rows, examples):
            answer = [t for t in example.labels if t != IGNORE]
            # The prompt part is exactly what the engine would feed; the answer follows it.
            assert example.labels[: len(example.input_ids) - len(answer)] == [IGNORE] * (len(example.input_ids) - len(answer))
            assert example.input_ids[-len(answer):] == answer
            text = tokenizer.decode(answer)
            if dialect is Dialect.ORIGINAL:
                assert text.endswith("(답변 종료)<|endoftext|>")
            else:
                assert text.startswith(row.memory or "없음") and text.endswith("<|im_end|>")


def test_fact_examples_are_repeated(tiny_base):
    """--fact-repeat: a memory answer that states a fact, and a reply to an input carrying a recalled one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    rows = load_rows(PERSONA_CSV)
    stated = [r for r in rows if r.memory][:2]
    recalled = [r for r in rows if split_final_input(r.input_data).memory][:2]
    plain = [r for r in rows if not r.memory and not split_final_input(r.input_data).memory][:3]
    picked = stated + recalled + plain
    states = sum(bool(r.memory) for r in picked)
    carries = sum(bool(split_final_input(r.input_data).memory) for r in picked)
    assert states >= 2 and carries == 2
    assert len(build_examples(tokenizer, picked, ["memory"], Dialect.TUNED, fact_repeat=3)) == 7 + 2 * states
    assert len(build_examples(tokenizer, picked, ["message"], Dialect.TUNED, fact_repeat=3)) == 7 + 2 * carries
    assert len(build_examples(tokenizer, picked, ["summary", "pose"], Dialect.TUNED, fact_repeat=3)) == 14


# ------------------------------------------------------------------ the command
def write_rows(path: Path, rows: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def small_dataset(path: Path, n_train: int = 24, n_valid: int = 8) -> Path:
    rows = load_rows(PERSONA_CSV)
    picked = [r for r in rows if r.data_type == "train"][:n_train] + [r for r in rows if r.data_type == "valid"][:n_valid]
    return write_rows(path, [tuple(getattr(r, c) for c in COLUMNS) for r in picked])


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from ohlora.tiny import build_base

    return build_base(tmp_path_factory.mktemp("tiny") / "base")


def train_cli(*args: str):
    return runner.invoke(app, ["train", *args], catch_exceptions=False)


@pytest.mark.parametrize("case", ["missing column", "empty split", "parser", "extra data", "base", "adapter",
                                  "stale checkpoints"])
def test_bad_input_stops_before_training(tmp_path, tiny_base, case):
    data = small_dataset(tmp_path / "data.csv")
    base, extra = str(tiny_base), []
    if case == "missing column":
        rows = list(csv.reader(open(data, encoding="utf-8")))
        write_rows(data, [tuple(r[:5]) for r in rows[1:]], COLUMNS[:5])
        expected = "lacks the column(s) eyes_mouth_pose"
    elif case == "empty split":
        rows = [r for r in csv.reader(open(data, encoding="utf-8"))][1:]
        write_rows(data, [tuple(r) for r in rows if r[0] == "train"])
        expected = "the valid split is empty"
    elif case == "parser":
        rows = [r for r in csv.reader(open(data, encoding="utf-8"))][1:]
        rows[2][5] = "(눈 반짝, 입 보통, 고개 돌림 없음)"
        write_rows(data, [tuple(r) for r in rows])
        expected = "line 4: eyes_mouth_pose '(눈 반짝, 입 보통, 고개 돌림 없음)' is rejected by the pose parser"
    elif case == "extra data":  # checked with the dataset: an input already in it is a duplicate
        rows = [r for r in csv.reader(open(data, encoding="utf-8"))][1:]
        write_rows(tmp_path / "more.csv", [tuple(rows[0])])
        extra = ["--extra-data", str(tmp_path / "more.csv")]
        expected = f"more.csv line 2: input '{rows[0][1]}' appears twice (also data.csv line 2)"
    elif case == "base":
        base = str(tmp_path / "no-such-base")
        expected = "does not load"
    elif case == "adapter":
        (tmp_path / "broken-adapter").mkdir()
        extra = ["--init-adapter", str(tmp_path / "broken-adapter")]
        expected = "the adapter"
    else:
        (tmp_path / "out" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
        expected = "holds checkpoints of an earlier run"
    result = train_cli("--base", base, "--data", str(data), "--out", str(tmp_path / "out"), "--max-steps", "2", *extra)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def first_token_logits(base: Path, adapter: Path | None, dialect: Dialect, merge: bool = False) -> torch.Tensor:
    from services.llm_message.task import REPLY_TASK

    on_task = {"message": str(adapter)} if adapter and not merge else {}
    engine = LLMEngine.load(EngineConfig(base_model=str(base), adapters=on_task, dtype="float32", device="cpu",
                                         base_adapter=str(adapter) if adapter and merge else None))
    ids = engine.encode_prompt(REPLY_TASK.prompt(dialect, final_input="로라야 주말에 뭐 해?"))
    with torch.inference_mode():
        return engine.model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("dialect", ["tuned", "original"])
def test_train_a_few_steps_resume_and_serve(tmp_path, tiny_base, dialect):
    data = small_dataset(tmp_path / "data.csv")
    out = tmp_path / "adapter"
    common = ["--base", str(tiny_base), "--data", str(data), "--out", str(out), "--dialect", dialect,
              "--batch-size", "8", "--save-steps", "2", "--lr", "1e-2", "--dtype", "float32"]
    more = write_rows(tmp_path / "more.csv", [tuple(getattr(r, c) for c in COLUMNS) for r in load_rows(PERSONA_CSV)
                                               if r.data_type == "train"][100:102])
    first = train_cli(*common, "--max-steps", "2", "--extra-data", str(more))
    assert first.exit_code == 0, first.output
    resumed = train_cli(*common, "--max-steps", "4", "--resume", "--extra-data", str(more))
    assert resumed.exit_code == 0, resumed.output
    report = json.loads((out / "training-report.json").read_text())
    assert [s["steps"] for s in report["sittings"]] == [2, 2] and report["steps"] == 4
    assert report["train_examples"] == (24 + 2) * 4 and report["valid_examples"] == 8 * 4
    assert report["extra_data"] == [{"data": "more.csv", "sha256": sha256_file(more)}]
    assert "--extra-data" in report["command"]
    assert report["final_valid_loss"] > 0 and report["valid_loss_per_epoch"]
    assert report["machine"]["dtype"] == "float32" and report["machine"]["cpu_capability"]
    for key in ("adapter_sha256", "data_sha256", "base_sha256", "command"):
        assert report[key]
    assert report["command"].startswith("ohlora train --base")
    # The adapter loads in the engine and changes what the model says.
    chosen = Dialect(dialect)
    tuned = first_token_logits(tiny_base, out, chosen)
    plain = first_token_logits(tiny_base, None, chosen)
    assert (tuned - plain).abs().max() > 1e-2
    # Merged into the base (one adapter for every task of a process), it says the same.
    assert torch.allclose(first_token_logits(tiny_base, out, chosen, merge=True), tuned, atol=1e-4)


def test_an_adapter_trained_over_a_merged_one_serves_over_it(tmp_path, tiny_base):
    """mini's memory adapter: trained with --base-adapter (the persona merged first), served with llm.base_adapter."""
    data = small_dataset(tmp_path / "data.csv")
    common = ["--base", str(tiny_base), "--data", str(data), "--batch-size", "8", "--lr", "1e-2", "--dtype", "float32",
              "--max-steps", "2"]
    persona, memory = tmp_path / "persona", tmp_path / "memory"
    assert train_cli(*common, "--out", str(persona)).exit_code == 0
    result = train_cli(*common, "--out", str(memory), "--task", "memory", "--base-adapter", str(persona),
                       "--fact-repeat", "3")
    assert result.exit_code == 0, result.output
    report = json.loads((memory / "training-report.json").read_text())
    facts = sum(1 for r in load_rows(data) if r.data_type == "train" and r.memory)
    assert report["train_examples"] == 24 + 2 * facts  # each fact turn three times
    assert "--base-adapter" in report["command"] and "--fact-repeat 3" in report["command"]
    assert report["base_adapter_sha256"] == sha256_file(persona / "adapter_model.safetensors")

    def logits(base_adapter: Path | None, own: Path | None) -> torch.Tensor:
        from services.llm_memory.task import EXTRACT_TASK

        engine = LLMEngine.load(EngineConfig(base_model=str(tiny_base), dtype="float32", device="cpu",
                                             base_adapter=str(base_adapter) if base_adapter else None,
                                             adapters={"memory": str(own)} if own else {}))
        ids = engine.encode_prompt(EXTRACT_TASK.prompt(Dialect.TUNED, final_input="나 고양이 키워"))
        with torch.inference_mode(), engine._adapter_context("memory" if own else None):
            return engine.model(input_ids=torch.tensor([ids])).logits[0, -1]

    on_persona = logits(persona, None)
    stacked = logits(persona, memory)
    assert (stacked - on_persona).abs().max() > 1e-2  # the memory adapter changes what the persona says
    assert (on_persona - logits(None, None)).abs().max() > 1e-2  # and the persona is really merged under it


def test_trained_adapter_answers_its_tasks(tmp_path, tiny_base):
    """Long enough on a handful of rows that the tiny model learns them: the services' parsers accept the output."""
    from ohlora.llm.task import complete_task
    from ohlora.train.dataset import task_spec

    data = small_dataset(tmp_path / "data.csv", n_train=4, n_valid=2)
    out = tmp_path / "adapter"
    result = train_cli("--base", str(tiny_base), "--data", str(data), "--out", str(out), "--task", "pose",
                       "--epochs", "60", "--lr", "2e-2", "--batch-size", "4", "--dtype", "float32", "--save-steps", "1000")
    assert result.exit_code == 0, result.output
    rows = [r for r in load_rows(data) if r.data_type == "train"]

    async def run() -> list[object]:
        engine = LLMEngine.load(EngineConfig(base_model=str(tiny_base), adapters={"pose": str(out)}, dtype="float32",
                                             device="cpu", seed=1))
        engine.start()
        try:
            spec = task_spec("pose")
            return [await complete_task(engine.for_adapter("pose"), spec, Dialect.TUNED, **r.fields("pose")) for r in rows]
        finally:
            await engine.stop()

    finished = asyncio.run(run())
    assert sum(not f.stats.fallback for f in finished) >= 3


def test_tuned_prompts_carry_no_few_shot_turns(tiny_base):
    """The tuned dialect is what makes a fine-tuned turn cheap: a system line and the input, a fraction of CHAT."""
    from transformers import AutoTokenizer

    from ohlora.llm.engine import encode_prompt
    from ohlora.train.dataset import task_spec

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    row = [r for r in load_rows(PERSONA_CSV) if r.input_data.startswith("[")][0]
    for task in TASK_NAMES:
        spec = task_spec(task)
        tuned = spec.prompt(Dialect.TUNED, **row.fields(task))
        chat = spec.prompt(Dialect.CHAT, **row.fields(task))
        assert len(tuned.messages()) == 2 and len(chat.messages()) > 2
        assert len(encode_prompt(tokenizer, tuned)) * 3 < len(encode_prompt(tokenizer, chat))
    # The reply keeps the recalled memory in front of the user's words: the adapter learned to use it there.
    assert task_spec("message").prompt(Dialect.TUNED, final_input=row.input_data).user == row.input_data


def test_a_process_whose_tasks_share_one_adapter_merges_it():
    from ohlora.config import LLMSettings, Settings, TaskModel
    from ohlora.llm.host import LLMHost

    def merged_and_own(settings: Settings, tasks: list[str]) -> tuple[str | None, dict[str, str]]:
        config = LLMHost(settings, tasks).engine_config()
        return config.base_adapter, config.adapters

    shared = Settings(llm=LLMSettings(tasks={t: TaskModel(adapter="/a") for t in TASK_NAMES}))
    assert merged_and_own(shared, list(TASK_NAMES)) == ("/a", {})
    assert merged_and_own(shared, ["message", "pose"]) == ("/a", {})
    mixed = Settings(llm=LLMSettings(tasks={**{t: TaskModel(adapter="/a") for t in TASK_NAMES}, "pose": TaskModel()}))
    assert merged_and_own(mixed, list(TASK_NAMES))[0] is None  # pose needs the bare base
    assert merged_and_own(Settings(), list(TASK_NAMES))[0] is None  # four adapters (ohlora-v2)
    # A persona merged under every task, and the memory task's own adapter trained on top of it (mini).
    stacked = Settings(llm=LLMSettings(base_adapter="/persona", tasks={"memory": TaskModel(adapter="/memory")}))
    assert merged_and_own(stacked, list(TASK_NAMES)) == ("/persona", {"memory": "/memory"})
    assert merged_and_own(stacked, ["message", "pose"]) == ("/persona", {})


# ------------------------------------------------------------------ calibrating the memory's opening
def test_the_best_threshold_balances_both_kinds():
    from ohlora.errors import ConfigError
    from ohlora.train.calibrate import best_threshold

    # Facts at 0.9, 0.6, 0.3; remarks at 0.4, 0.1: the cut at 0.5 sorts 2/3 and 2/2 (0.83); at 0.2, 3/3 and 1/2
    # (0.75); at 0.35, 2/3 and 1/2.
    chosen = best_threshold([0.9, 0.6, 0.3, 0.4, 0.1], [True, True, True, False, False])
    assert chosen.value == pytest.approx(0.5) and chosen.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    # Equal cuts (0.3 and 0.7 both sort 3 of 4): the middle one of them, of two the upper.
    assert best_threshold([0.8, 0.2, 0.4, 0.6], [True, False, True, False]).value == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="both kinds"):
        best_threshold([0.5, 0.6], [True, True])


def test_calibrate_the_memory_opening_and_serve_by_it(tmp_path, tiny_base):
    """`ohlora train-calibrate` writes the threshold beside the adapter; the engine then decides each memory answer's
    opening by it: a fact opening with a key of the vocabulary at or above it, the explicit nothing below."""
    from ohlora.llm.calibration import CALIBRATION_FILE
    from services.llm_memory.task import EXTRACT_TASK, NOTHING

    data = small_dataset(tmp_path / "data.csv")
    adapter = tmp_path / "memory"
    trained = train_cli("--base", str(tiny_base), "--data", str(data), "--out", str(adapter), "--task", "memory",
                        "--max-steps", "2", "--dtype", "float32", "--lr", "1e-2")
    assert trained.exit_code == 0, trained.output
    config = tmp_path / "ohlora.toml"
    config.write_text(f'[llm]\nbase_model = "{tiny_base}"\ndialect = "tuned"\ndtype = "float32"\ndevice = "cpu"\n'
                      f'[llm.tasks.memory]\nadapter = "{adapter}"\n')
    later = [r for r in load_rows(PERSONA_CSV) if r.data_type == "train"][100:]  # not in data.csv
    held_out = [r for r in later if r.memory][:12] + [r for r in later if not r.memory][:12]
    calibration_rows = write_rows(tmp_path / "held-out.csv", [tuple(getattr(r, c) for c in COLUMNS) for r in held_out])

    refused = runner.invoke(app, ["train-calibrate", "--data", str(data), "--config", str(config)])
    assert refused.exit_code == 2 and "was trained on this file" in refused.output
    facts_only = write_rows(tmp_path / "facts-only.csv", [tuple(getattr(r, c) for c in COLUMNS) for r in held_out
                                                            if r.memory])
    refused = runner.invoke(app, ["train-calibrate", "--data", str(facts_only), "--config", str(config)])
    assert refused.exit_code == 2 and "rows of both kinds" in refused.output
    assert not (adapter / CALIBRATION_FILE).exists()
    result = runner.invoke(app, ["train-calibrate", "--data", str(calibration_rows), "--config", str(config)])
    assert result.exit_code == 0, result.output
    written = json.loads((adapter / CALIBRATION_FILE).read_text())
    assert written["opening"]["text"] == "["
    facts = sum(bool(r.memory) for r in held_out)
    assert written["rows"] == {"opening": facts, "other": len(held_out) - facts}
    assert written["data"] == [{"file": "held-out.csv", "sha256": sha256_file(calibration_rows)}]
    assert written["balanced_accuracy"] >= 0.5 and written["command"].startswith("ohlora train-calibrate --data")

    # Served: the decision follows the model's probability of "[" against the threshold. The threshold is set in
    # the widest gap among the middle third of these inputs' probabilities, so both sides are exercised whatever
    # the tiny model learnt, and no row sits within rounding of it (a batched pass is not bit-equal to one alone).
    def middle_gap(chances: list[float]) -> float:
        ranked = sorted(chances)
        third = len(ranked) // 3
        low = max(range(third, 2 * third), key=lambda i: ranked[i + 1] - ranked[i])
        assert ranked[low + 1] - ranked[low] > 1e-4
        return (ranked[low] + ranked[low + 1]) / 2

    async def answers() -> tuple[list[float], list[str]]:
        engine = LLMEngine.load(EngineConfig(base_model=str(tiny_base), adapters={"memory": str(adapter)},
                                             dtype="float32", device="cpu", seed=3))
        prompts = [EXTRACT_TASK.prompt(Dialect.TUNED, final_input=r.input_data) for r in held_out]
        chances = [engine.next_token_probability(p, "memory", "[") for p in prompts]
        written["opening"]["threshold"] = middle_gap(chances)
        (adapter / CALIBRATION_FILE).write_text(json.dumps(written))
        engine = LLMEngine.load(EngineConfig(base_model=str(tiny_base), adapters={"memory": str(adapter)},
                                             dtype="float32", device="cpu", seed=3, max_batch_size=8))
        engine.start()
        settings = EXTRACT_TASK.settings_for(Dialect.TUNED)

        async def one(prompt: object) -> str:
            async for update in engine.for_adapter("memory").generate(prompt, settings):
                if update.done:
                    return update.text
            raise AssertionError("no final update")

        try:
            return chances, list(await asyncio.gather(*(one(p) for p in prompts)))
        finally:
            await engine.stop()

    chances, texts = asyncio.run(answers())
    threshold = middle_gap(chances)
    openings = tuple(f"[{key}:" for key in MEMORY_KEYS)
    for chance, text in zip(chances, texts):
        assert text.startswith(openings) if chance >= threshold else text == NOTHING, (chance, threshold, text)
    # Both sides were exercised, and opened answers go on past their opening (the value is sampled freely).
    assert {chance >= threshold for chance in chances} == {True, False}
    assert any(text not in openings for text in texts if text.startswith(openings))
