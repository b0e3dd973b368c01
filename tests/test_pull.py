"""`ohlora models pull` through the CLI against tests/hub_imitation.py: the Hub and GitHub as they behave
(pagination, redirects to a signed CDN, renamed repositories, truncated trees, drops, 429s and 5xx), serving
files made here. Each test is one behaviour; every one of them failed on the pull before the imitation."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hub_imitation import Fault, HubImitation
from ohlora.pull import FACE_DATA_FILES, INDEX, MANIFEST, OHLORA_V2, GitHubFiles, HubRepo
from services.face.face_data import GROUPS, PASSED_OHLORA_NOS, PROPERTIES, write_face_data

BASE = OHLORA_V2[0]
SBERT = next(s for s in OHLORA_V2 if s.dest == "sbert")
FACES = next(s for s in OHLORA_V2 if isinstance(s, GitHubFiles))
WEIGHTS = "model.safetensors"
# Waits between retries stay short here; the retry logic is the same.
FAST = {"OHLORA_PULL_MAX_WAIT": "0.02"}


def hub_files(source: HubRepo, rng: np.random.Generator) -> tuple[dict[str, bytes], str]:
    """A model repo's files (a folder, files the pull skips, a name that needs quoting) and its LFS weights' name."""
    weights = source.include[0] if source.include != ("*",) else WEIGHTS
    return {"config.json": json.dumps({"repo": source.repo}).encode(), weights: rng.bytes(300_000),
            "README.md": b"# model card", "tokenizer/tokenizer.json": b'{"version": "1.0"}',
            "tokenizer/special tokens #1.json": b"{}", "training_args.bin": b"skip me",
            "flax_model.msgpack": b"skip me too"}, weights


def face_repo_files(root: Path, rng: np.random.Generator) -> dict[str, bytes]:
    faces = root / "faces"
    vectors = {(p, g): (lambda v: v / np.linalg.norm(v))(rng.standard_normal(512)) for p in PROPERTIES for g in GROUPS}
    write_face_data(faces, np.round(rng.standard_normal((27, 515)), 4), list(PASSED_OHLORA_NOS),
                    [GROUPS[i % 8] for i in range(27)], vectors)
    files = {f"{FACES.folder}/{p.relative_to(faces).as_posix()}": p.read_bytes() for p in faces.rglob("*") if p.is_file()}
    return {**files, "README.md": b"x", "2024_other_project/train.py": b"print()", f"{FACES.folder}/notes.txt": b"n"}


@pytest.fixture
def hub(tmp_path):
    """The ohlora-v2 sources on the imitation, four entries a page."""
    imitation = HubImitation(page_size=4)
    rng = np.random.default_rng(0)
    for source in OHLORA_V2:
        if isinstance(source, HubRepo):
            files, weights = hub_files(source, rng)
            imitation.add_hub_repo(source.repo, files, lfs={weights}, xet={weights})
        else:
            imitation.add_github_repo(source.repo, source.pinned, face_repo_files(tmp_path, rng))
    yield imitation
    imitation.close()


def pull(hub: HubImitation, models: Path, *args: str, env: dict[str, str] | None = None,
         limit_file_size: int | None = None) -> subprocess.CompletedProcess[str]:
    endpoints = ["--hub-endpoint", f"{hub.url}/hub", "--github-api", f"{hub.url}/ghapi", "--github-raw", f"{hub.url}/raw"]
    if env and "HF_ENDPOINT" in env:
        endpoints = endpoints[2:]
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))) if limit_file_size else None
    return subprocess.run([sys.executable, "-m", "ohlora.cli", "models", "pull", "--dir", str(models), *endpoints, *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **FAST, **(env or {})},
                          preexec_fn=limit)


def check(models: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ohlora.cli", "models", "pull", "--dir", str(models), "--check"],
                          capture_output=True, text=True, timeout=300)


def installed_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The pull failed with exactly one line on stderr besides progress bars, and no traceback."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def nothing_installed(models: Path) -> bool:
    return not (models / "ohlora-v2.toml").exists() and not any(
        (models / s.dest).exists() for s in OHLORA_V2)


# ---------------------------------------------------------------- a complete, verified install

def test_a_paginated_hub_installs_every_wanted_file_verified(hub, tmp_path):
    models = tmp_path / "models"
    done = pull(hub, models)
    assert done.returncode == 0, done.stderr
    for source in OHLORA_V2:
        if isinstance(source, HubRepo):
            expected = {p for p in hub.hub[source.repo].files
                        if source.include != ("*",) and p in source.include or source.include == ("*",)
                        and p not in ("training_args.bin", "flax_model.msgpack")}
            assert installed_files(models / source.dest) == expected, source.repo
    assert (models / BASE.dest / "tokenizer" / "special tokens #1.json").exists(), "paths are quoted in URLs"
    assert len(hub.seen("hub", "/tree/")) > len(OHLORA_V2), "trees were read page by page"
    from services.face.face_data import FaceBank

    assert installed_files(models / "face_data") == set(FACE_DATA_FILES)
    assert len(FaceBank.load(models / "face_data").faces) == 27, "the face data loads as installed"
    config = (models / "ohlora-v2.toml").read_text()
    assert str(models / "adapters" / "pose") in config and 'renderer = "stylegan"' in config
    assert not (models / ".partial").exists()


def test_lfs_files_come_from_the_cdn_through_a_signed_redirect(hub, tmp_path):
    models = tmp_path / "models"
    assert pull(hub, models).returncode == 0
    cdn = hub.seen("cdn")
    assert len(cdn) == len(OHLORA_V2) - 1, "each LFS weight file came from the second origin"
    weights = models / BASE.dest / WEIGHTS
    assert weights.read_bytes() == hub.hub[BASE.repo].files[WEIGHTS]


def test_a_second_pull_finds_everything_installed(hub, tmp_path):
    models = tmp_path / "models"
    assert pull(hub, models).returncode == 0
    again = pull(hub, models)
    assert again.returncode == 0 and again.stdout.count("already installed") == len(OHLORA_V2)


def test_check_verifies_every_installed_file(hub, tmp_path):
    models = tmp_path / "models"
    assert pull(hub, models).returncode == 0
    done = check(models)
    assert done.returncode == 0, done.stdout + done.stderr
    total = sum(len(installed_files(models / s.dest)) for s in OHLORA_V2)
    assert done.stdout.count("\nok ") + done.stdout.startswith("ok ") == total
    assert f"all {total} files verified" in done.stdout
    index = json.loads((models / INDEX).read_text())
    assert {s["dest"]: s["revision"] for s in index["sources"]}[BASE.dest] == hub.hub[BASE.repo].sha


def test_check_names_a_changed_file_and_fails(hub, tmp_path):
    models = tmp_path / "models"
    assert pull(hub, models).returncode == 0
    changed = models / "face_data" / "ohlora_z_vectors.csv"
    data = bytearray(changed.read_bytes())
    data[100] ^= 1
    changed.write_bytes(bytes(data))
    done = check(models)
    assert done.returncode == 1
    assert [l for l in done.stdout.splitlines() if not l.startswith("ok ")][0].startswith(
        "CHANGED  face_data/ohlora_z_vectors.csv: sha256 ")
    assert "1 problem(s)" in done.stdout


def test_check_without_a_pull_says_what_to_do(tmp_path):
    done = check(tmp_path / "empty")
    assert "no manifest to check against" in one_line_error(done)


# ---------------------------------------------------------------- revisions

def test_a_folder_from_before_manifests_is_verified_in_place_not_downloaded_again(hub, tmp_path):
    models = tmp_path / "models"
    assert pull(hub, models).returncode == 0
    folder = models / SBERT.dest
    (folder / MANIFEST).unlink()
    (folder / ".ohlora-revision").write_text(hub.hub[SBERT.repo].sha)  # what the earlier pull left
    before = len(hub.seen("cdn"))
    again = pull(hub, models)
    assert again.returncode == 0, again.stderr
    assert "(verified, manifest written)" in again.stdout and len(hub.seen("cdn")) == before
    assert check(models).returncode == 0



def test_the_first_pull_records_the_commit_and_later_pulls_stay_on_it(hub, tmp_path):
    models = tmp_path / "models"
    first = hub.hub[BASE.repo].sha
    done = pull(hub, models)
    assert done.returncode == 0 and "following main once and recording the commit" in done.stdout
    files, _ = hub_files(BASE, np.random.default_rng(1))
    moved = hub.add_hub_repo(BASE.repo, files, lfs={WEIGHTS})  # upstream re-uploads: main moves
    again = pull(hub, models)
    assert again.returncode == 0
    assert f"{BASE.repo}: already installed at {first[:12]}" in again.stdout
    assert "the commit recorded at its first pull" in again.stdout
    assert Path(models / BASE.dest / WEIGHTS).read_bytes() != moved.files[WEIGHTS]
    follow = pull(hub, models, "--revision", f"{BASE.repo}=main")
    assert follow.returncode == 0, follow.stderr
    assert Path(models / BASE.dest / WEIGHTS).read_bytes() == moved.files[WEIGHTS]
    assert json.loads((models / BASE.dest / MANIFEST).read_text())["revision"] == moved.sha


def test_staged_files_of_another_commit_are_discarded(hub, tmp_path):
    models = tmp_path / "models"
    hub.fail(WEIGHTS, Fault(drop_after=1000, origin="cdn"))
    first = pull(hub, models, env={"OHLORA_PULL_RETRIES": "0"})
    assert first.returncode == 1
    stale = models / ".partial" / f"{BASE.dest}@{hub.hub[BASE.repo].sha}"
    assert (stale / "config.json").exists()
    files, _ = hub_files(BASE, np.random.default_rng(7))
    files["config.json"] = b'{"repo": "moved"}'  # same path, other content: must not be mixed in
    moved = hub.add_hub_repo(BASE.repo, files, lfs={WEIGHTS})
    second = pull(hub, models)
    assert second.returncode == 0, second.stderr
    assert "discarding staged files of another revision" in second.stdout
    assert (models / BASE.dest / "config.json").read_bytes() == b'{"repo": "moved"}'
    assert (models / BASE.dest / WEIGHTS).read_bytes() == moved.files[WEIGHTS]


# ---------------------------------------------------------------- the network misbehaving

def test_an_interrupted_pull_resumes_on_the_next_run(hub, tmp_path):
    models = tmp_path / "models"
    hub.fail(WEIGHTS, Fault(drop_after=100_000, origin="cdn"))
    first = pull(hub, models, env={"OHLORA_PULL_RETRIES": "0"})
    assert "running the command again resumes them" in one_line_error(first)
    assert nothing_installed(models), "nothing half-installed in use"
    second = pull(hub, models)
    assert second.returncode == 0, second.stderr
    assert any(r.range == "bytes=100000-" for r in hub.seen("cdn")), "the second pull asked only for the missing bytes"
    assert (models / BASE.dest / WEIGHTS).read_bytes() == hub.hub[BASE.repo].files[WEIGHTS]


def test_a_dropped_body_is_resumed_within_the_same_pull_with_a_fresh_signature(hub, tmp_path):
    models = tmp_path / "models"
    hub.signed_url_seconds = 0.5
    hub.fail(WEIGHTS, Fault(drop_after=50_000, origin="cdn"), Fault(drop_after=50_000, origin="cdn"))
    done = pull(hub, models, env={"OHLORA_PULL_MAX_WAIT": "0.6"})  # the first signed URL has expired by the retry
    assert done.returncode == 0, done.stderr
    assert [r.range for r in hub.seen("cdn") if r.range] == ["bytes=50000-", "bytes=100000-"]
    assert len(hub.seen("hub", f"/resolve/{hub.hub[BASE.repo].sha}/{WEIGHTS}")) == 3, "each try resolved anew"
    assert "retry 1/5" in done.stdout and "RemoteProtocolError" in done.stdout
    assert (models / BASE.dest / WEIGHTS).read_bytes() == hub.hub[BASE.repo].files[WEIGHTS]


def test_a_cdn_that_ignores_range_gets_the_file_from_the_start(hub, tmp_path):
    models = tmp_path / "models"
    hub.fail(WEIGHTS, Fault(drop_after=70_000, origin="cdn"), Fault(ignore_range=True, origin="cdn"))
    done = pull(hub, models)
    assert done.returncode == 0, done.stderr
    assert "sent the whole file instead of the missing part" in done.stdout
    assert (models / BASE.dest / WEIGHTS).read_bytes() == hub.hub[BASE.repo].files[WEIGHTS]


def test_429_with_retry_after_is_waited_for_and_retried(hub, tmp_path):
    models = tmp_path / "models"
    hub.fail(f"/{BASE.repo}/revision/main", Fault(status=429, retry_after="3"))
    done = pull(hub, models)
    assert done.returncode == 0, done.stderr
    assert f"{BASE.repo}@main: HTTP 429; retry 1/5 in 0.02 s (the server asked for 3 s)" in done.stdout


def test_server_errors_are_retried_with_backoff(hub, tmp_path):
    models = tmp_path / "models"
    hub.fail("/tree/" + hub.hub[SBERT.repo].sha, Fault(status=502), Fault(status=503))
    hub.fail("ohlora_z_vectors.csv", Fault(status=500))
    done = pull(hub, models)
    assert done.returncode == 0, done.stderr
    assert "HTTP 502; retry 1/5" in done.stdout and "HTTP 503; retry 2/5" in done.stdout
    assert "ohlora_z_vectors.csv: HTTP 500; retry 1/5" in done.stdout


def test_retries_are_bounded_and_end_in_one_line(hub, tmp_path):
    models = tmp_path / "models"
    hub.fail(WEIGHTS, *[Fault(status=503, origin="cdn")] * 3)
    done = pull(hub, models, env={"OHLORA_PULL_RETRIES": "2"})
    line = one_line_error(done)
    assert f"{WEIGHTS}: HTTP 503, still after 2 retries" in line and "resumes them" in line
    assert nothing_installed(models)


def test_a_renamed_repository_is_followed_on_the_hub_and_on_github(hub, tmp_path):
    models = tmp_path / "models"
    hub.rename_hub_repo(SBERT.repo, "daebakgazua/OhLoRA_SBERT_v2")
    hub.github["WannaBeSuperteur/AI_Projects_2025"] = hub.github.pop(FACES.repo)
    hub.github_renamed[FACES.repo] = "WannaBeSuperteur/AI_Projects_2025"
    done = pull(hub, models)
    assert done.returncode == 0, done.stderr
    assert f"{SBERT.repo}: the repository is now daebakgazua/OhLoRA_SBERT_v2" in done.stdout
    assert (models / "sbert" / "config.json").exists() and installed_files(models / "face_data") == set(FACE_DATA_FILES)


def test_tokens_go_only_to_their_own_endpoints_and_are_never_printed(hub, tmp_path):
    models = tmp_path / "models"
    done = pull(hub, models, env={"HF_TOKEN": "hf_secret123", "GITHUB_TOKEN": "ghp_secret456"})
    assert done.returncode == 0, done.stderr
    assert {r.authorization for r in hub.seen("hub", "/hub/")} == {"Bearer hf_secret123"}
    assert {r.authorization for r in hub.seen("hub", "/ghapi/")} | {r.authorization for r in hub.seen("hub", "/raw/")} == {
        "Bearer ghp_secret456"}
    assert {r.authorization for r in hub.seen("cdn")} == {None}, "no token follows the redirect to the CDN"
    assert "secret" not in done.stdout + done.stderr


def test_hf_endpoint_may_end_with_a_slash(hub, tmp_path):
    models = tmp_path / "models"
    done = pull(hub, models, "--github-api", f"{hub.url}/ghapi", "--github-raw", f"{hub.url}/raw",
                env={"HF_ENDPOINT": f"{hub.url}/hub/"})
    assert done.returncode == 0, done.stderr
    assert not [r for r in hub.requests if "//" in r.path]


# ---------------------------------------------------------------- listings that are not complete

def test_a_truncated_github_tree_is_listed_folder_by_folder(hub, tmp_path):
    models = tmp_path / "models"
    hub.truncated = {"repository"}
    done = pull(hub, models)
    assert done.returncode == 0, done.stderr
    assert "GitHub truncated the repository's tree listing" in done.stdout
    assert installed_files(models / "face_data") == set(FACE_DATA_FILES)


def test_a_tree_truncated_down_to_the_folder_is_refused(hub, tmp_path):
    models = tmp_path / "models"
    hub.truncated = {"repository", "folder"}
    line = one_line_error(pull(hub, models))
    assert f"GitHub truncated the tree listing of {FACES.folder} too" in line and "nothing was installed" in line
    assert nothing_installed(models)
    assert not hub.seen("cdn"), "refused before any download"


def test_an_include_pattern_that_matches_nothing_is_refused(hub, tmp_path):
    models = tmp_path / "models"
    del hub.github[FACES.repo].files[f"{FACES.folder}/ohlora_w_group_names.csv"]
    line = one_line_error(pull(hub, models))
    assert "nothing in the listing matches 'ohlora_w_group_names.csv'" in line
    assert nothing_installed(models) and not hub.seen("cdn")


def test_a_missing_face_data_file_is_refused(hub, tmp_path):
    models = tmp_path / "models"
    del hub.github[FACES.repo].files[f"{FACES.folder}/property_score_vectors/pose_change_w_vector_lhl.csv"]
    line = one_line_error(pull(hub, models))
    assert "1 of the 26 expected files are not in the listing (property_score_vectors/pose_change_w_vector_lhl.csv)" in line
    assert nothing_installed(models)


def test_a_xet_file_without_its_sha256_is_refused(hub, tmp_path):
    models = tmp_path / "models"
    hub.hub[SBERT.repo].lfs.clear()
    line = one_line_error(pull(hub, models))
    assert f"no sha256 for {WEIGHTS}" in line


def test_a_checksum_failure_is_clear_and_installs_nothing(hub, tmp_path):
    models = tmp_path / "models"
    sbert = hub.hub[SBERT.repo]
    good = sbert.files["config.json"]
    sbert.served["config.json"] = bytes([good[0] ^ 1]) + good[1:]
    line = one_line_error(pull(hub, models))
    assert "config.json: checksum mismatch" in line and "nothing was installed" in line
    assert nothing_installed(models), "not even the sources that were verified before it"
    sbert.served.clear()
    assert pull(hub, models).returncode == 0
    assert (models / "sbert" / "config.json").read_bytes() == good


# ---------------------------------------------------------------- the local disk

def test_a_listing_bigger_than_the_free_space_is_refused_before_downloading(hub, tmp_path):
    models = tmp_path / "models"
    hub.hub[BASE.repo].listed_sizes = {WEIGHTS: 10**16}  # 10 PB
    line = one_line_error(pull(hub, models))
    assert line.startswith(f"error: not enough free space in {models}: the pull needs 10000000")
    assert not hub.seen("cdn") and not hub.seen("hub", "/resolve/")


def test_a_write_error_is_one_line(hub, tmp_path):
    """RLIMIT_FSIZE makes writing past 200 kB fail with EFBIG, as a full disk fails with ENOSPC."""
    models = tmp_path / "models"
    line = one_line_error(pull(hub, models, limit_file_size=200_000))
    assert line.startswith(f"error: file system error at {models / '.partial'}") and "File too large" in line


def test_a_models_folder_that_cannot_exist_is_one_line(hub, tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_line_error(pull(hub, tmp_path / "file" / "models"))
    assert "Not a directory" in line and "--dir" in line


# ---------------------------------------------------------------- the retry policy itself

def test_retry_after_is_read_in_both_of_its_forms_and_waits_grow_to_a_cap():
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from ohlora.pull.transfer import RetryPolicy, retry_after_seconds

    assert retry_after_seconds("7") == 7.0
    assert 28 < retry_after_seconds(format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)) <= 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    policy = RetryPolicy(retries=6, first_wait=1.0, max_wait=10.0)
    assert [policy.wait(n, None) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.wait(1, 3.0) == 3.0 and policy.wait(1, 99.0) == 10.0, "Retry-After honoured, within the cap"
