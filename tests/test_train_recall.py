"""`ohlora train-recall`: the (memory, turn) pairs it learns from, and a real run on a tiny sentence-transformers
model built in code, whose adapter must load, merge and change what the embedder says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ohlora.train.dataset import PERSONA_CSV, PersonaRow, load_rows
from ohlora.train.recall import RECALL_PAIRS_CSV, load_recall_pairs, merge_recall_adapter, recall_pairs, topic

TEXTS = ["[좋아하는 음식: 떡볶이]", "오늘 저녁 뭐 먹지?", "[상태: 시험 기간]", "주말에 뭐 할까"]


def row(line: int, input_data: str, memory: str = "") -> PersonaRow:
    return PersonaRow(line, "train", input_data, "응!", memory, "요약", "눈 보통, 입 보통, 고개 돌림 없음")


def test_pairs_relate_a_memory_to_the_turns_about_it_and_to_no_turn_on_its_topic():
    rows = [
        row(2, "[좋아하는 음식: 떡볶이] 오늘 저녁 뭐 먹지?"),
        row(3, "나 매운 떡볶이 진짜 좋아해", memory="[좋아하는 음식: 떡볶이]"),
        row(4, "난 초밥이 최고야", memory="[좋아하는 음식: 초밥]"),  # same topic: never an unrelated turn for 떡볶이
        row(5, "[상태: 시험 기간] 카페 갈까"),
        row(6, "요즘 너무 바빠", memory="[상태: 야근 중]"),  # a state is its value: unrelated to 시험 기간
        row(7, "오늘 날씨 좋다"),
        row(8, "로라야 안녕"),
    ]
    pairs = recall_pairs(rows, negatives=10, seed=0)
    related = {(p.memory, p.text) for p in pairs if p.score == 1.0}
    assert related == {("[좋아하는 음식: 떡볶이]", "오늘 저녁 뭐 먹지?"), ("[좋아하는 음식: 떡볶이]", "나 매운 떡볶이 진짜 좋아해"),
                       ("[좋아하는 음식: 초밥]", "난 초밥이 최고야"), ("[상태: 시험 기간]", "카페 갈까"),
                       ("[상태: 야근 중]", "요즘 너무 바빠")}
    unrelated = [(p.memory, p.text) for p in pairs if p.score == 0.0]
    food_turns = {"오늘 저녁 뭐 먹지?", "나 매운 떡볶이 진짜 좋아해", "난 초밥이 최고야"}
    assert not [pair for pair in unrelated if pair[0].startswith("[좋아하는 음식") and pair[1] in food_turns]
    assert ("[상태: 시험 기간]", "요즘 너무 바빠") in unrelated
    assert topic("[상태: 시험 기간]") != topic("[상태: 야근 중]") and topic("[MBTI: ENFP]") == "MBTI"
    assert recall_pairs(rows, negatives=10, seed=0) == pairs  # the seed fixes the sampled turns


def test_the_persona_dataset_gives_both_splits_pairs_to_learn_from():
    rows = load_rows(PERSONA_CSV)
    for split in ("train", "valid"):
        pairs = recall_pairs([r for r in rows if r.data_type == split], negatives=4, seed=1234)
        related = sum(p.score == 1.0 for p in pairs)
        assert related >= 100 if split == "train" else related >= 20
        assert len(pairs) - related >= 3 * related


def train_recall(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ohlora.cli", "train-recall", "--out", str(tmp_path / "adapter"), *args],
                          capture_output=True, text=True, timeout=600, env=env)


def test_train_recall_writes_an_adapter_that_changes_the_embedder(tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    from ohlora.tiny import build_embedder

    embedder = build_embedder(tmp_path / "embedder")
    done = train_recall(tmp_path, "--embedder", str(embedder), "--max-steps", "3", "--lr", "1e-2",
                        "--extra-pairs", str(RECALL_PAIRS_CSV), "--extra-repeat", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = tmp_path / "adapter"
    report = json.loads((adapter / "training-report.json").read_text())
    assert report["steps"] == 3 and report["related_pairs"]["train"] >= 100
    rows = load_rows(PERSONA_CSV)
    extra = load_recall_pairs(RECALL_PAIRS_CSV)
    for split, times in (("train", 3), ("valid", 1)):  # the extra pairs joined each split, train ones 3 times
        own = sum(p.score == 1.0 for p in recall_pairs([r for r in rows if r.data_type == split], 4, 1234))
        assert report["related_pairs"][split] == own + times * len(extra[split])
    assert report["extra_pairs_sha256"] and "--extra-pairs" in report["command"] and "--extra-repeat 3" in report["command"]
    assert report["adapter_sha256"] != "unknown" and len(report["data_sha256"]) == 64
    assert report["command"].startswith("ohlora train-recall ") and "--max-steps 3" in report["command"]
    assert (adapter / "adapter_model.safetensors").stat().st_size < 1_000_000  # the adapter, not the whole model

    before = SentenceTransformer(str(embedder), device="cpu").encode(TEXTS, normalize_embeddings=True)
    merged = merge_recall_adapter(SentenceTransformer(str(embedder), device="cpu"), adapter)
    after = merged.encode(TEXTS, normalize_embeddings=True)
    assert np.abs(after - before).max() > 1e-3
    # merged for serving: a saved copy loads as a plain sentence-transformers model with the same vectors
    merged.save(str(tmp_path / "merged"))
    again = SentenceTransformer(str(tmp_path / "merged"), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert np.abs(again - after).max() < 1e-5


def test_a_dataset_without_memories_is_refused_before_training(tmp_path: Path):
    from ohlora.tiny import build_embedder

    data = tmp_path / "plain.csv"
    lines = PERSONA_CSV.read_text(encoding="utf-8").splitlines()
    header, body = lines[0], [line for line in lines[1:] if "[" not in line]
    data.write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    done = train_recall(tmp_path, "--embedder", str(build_embedder(tmp_path / "embedder")), "--data", str(data))
    assert done.returncode == 2
    assert "no turn with a memory" in done.stderr and not (tmp_path / "adapter").exists()


def test_the_recall_pairs_are_stored_memories_with_new_turns_kept_apart_from_the_evaluation():
    """ohlora/train/data/recall-pairs.csv: memories in the stored form with keys of the vocabulary, turns used once,
    none from the persona dataset, the recall calibration set or either scenario set, and no value of the unseen
    scenarios (held out by fact)."""
    from ohlora.train.dataset import UNSEEN_SCENARIOS_JSON

    pairs = load_recall_pairs(RECALL_PAIRS_CSV)  # raises on a malformed row
    assert len(pairs["train"]) >= 100 and len(pairs["valid"]) >= 15
    turns = [turn for split in pairs.values() for _, turn in split]
    assert len(set(turns)) == len(turns)
    data = UNSEEN_SCENARIOS_JSON.parent
    calibration = json.loads((data / "recall_calibration.json").read_text(encoding="utf-8"))
    taken = {r.input_data for r in load_rows(PERSONA_CSV)}
    taken |= {t for e in calibration["memories"] for t in e["recall"] + e["unrelated"]}
    scenarios = [s for name in ("scenarios.json", "scenarios-unseen.json")
                 for s in json.loads((data / name).read_text(encoding="utf-8"))]
    taken |= {s[k] for s in scenarios for k in ("first", "second")}
    assert not set(turns) & {t.removeprefix("로라야 ") for t in taken} and not set(turns) & taken
    # Nor a rephrasing of a calibration or scenario turn: that would train the recall on what measures it.
    from difflib import SequenceMatcher

    held_out = [t for t in taken - {r.input_data for r in load_rows(PERSONA_CSV)}]
    close = [(t, h) for t in turns for h in held_out if SequenceMatcher(None, t, h).ratio() >= 0.6]
    assert not close, close
    text = RECALL_PAIRS_CSV.read_text(encoding="utf-8")
    for s in json.loads(UNSEEN_SCENARIOS_JSON.read_text(encoding="utf-8")):
        for word in [s["value"], *s["value"].split()]:
            assert word not in text, word


@pytest.mark.parametrize("memory, why", [
    ("[별자리: 사자자리]", "no key of the vocabulary"),
    ("[별자리 사자자리]", "rejected by the memory parser"),
    ("[취미: ]", "rejected by the memory parser"),
])
def test_a_malformed_recall_pair_is_refused_by_row(tmp_path: Path, memory: str, why: str):
    from ohlora.train.dataset import DatasetError

    bad = tmp_path / "pairs.csv"
    bad.write_text(f"data_type,memory,turn\ntrain,[반려동물: 고양이 치즈],냥이 밥 줬어\ntrain,{memory},운세 봐 줘\n",
                   encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"{bad}:3: memory .* {why}"):
        load_recall_pairs(bad)


def test_a_malformed_recall_pair_is_refused_before_training(tmp_path: Path):
    from ohlora.tiny import build_embedder

    bad = tmp_path / "pairs.csv"
    bad.write_text("data_type,memory,turn\ntrain,[반려동물: 고양이 치즈],냥이 밥 줬어\ntrain,[별자리: 사자자리],운세 봐 줘\n",
                   encoding="utf-8")
    done = train_recall(tmp_path, "--embedder", str(build_embedder(tmp_path / "embedder")), "--extra-pairs", str(bad))
    assert done.returncode == 2
    assert f"{bad}:3" in done.stderr and "사자자리" in done.stderr and not (tmp_path / "adapter").exists()


def test_an_embedder_that_does_not_load_is_named(tmp_path: Path):
    done = train_recall(tmp_path, "--embedder", str(tmp_path / "nowhere"), "--max-steps", "1")
    assert done.returncode == 2 and "does not load" in done.stderr


def test_merging_a_missing_adapter_is_a_clear_error(tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    from ohlora.errors import ConfigError
    from ohlora.tiny import build_embedder

    model = SentenceTransformer(str(build_embedder(tmp_path / "embedder")), device="cpu")
    with pytest.raises(ConfigError, match="does not load"):
        merge_recall_adapter(model, tmp_path / "not an adapter")


def test_recall_embeds_a_turn_without_its_address():
    from ohlora.llm.persona import without_address

    assert without_address("로라야 오늘 뭐 먹지?") == "오늘 뭐 먹지?"
    assert without_address("오로라야, 내 생일 기억해?") == "내 생일 기억해?"
    assert without_address("로라야!! 심심해") == "심심해"
    assert without_address("로라야") == "로라야"  # nothing else to embed: the turn as it is
    assert without_address("내가 로라야 하고 부르면 대답해 줘") == "내가 로라야 하고 부르면 대답해 줘"


def test_an_unknown_loss_is_refused(tmp_path: Path):
    done = train_recall(tmp_path, "--embedder", str(tmp_path / "nowhere"), "--loss", "fancy")
    assert done.returncode == 2 and "unknown loss 'fancy'" in done.stderr
