"""`ohlora models pull`: the original's weights and face data, verified, resumable, installed atomically.

Sources: Hugging Face model repos (file list and checksums from the hub API: sha256 for LFS
files, git blob sha1 for the rest) and the original's face data files from GitHub at the commit
the fixtures were made from (checked against the git tree's blob sha1). Downloads go to
<models>/.partial/ and resume with HTTP ranges; only when every file of a source is verified is
it moved into place, so a failed or interrupted pull never leaves a half-installed model in use.
Endpoints are configurable, so the same code runs against a local mirror.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

HUB = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
GITHUB_API = "https://api.github.com"
GITHUB_RAW = "https://raw.githubusercontent.com"
UPSTREAM_COMMIT = "2cb8d2f68011974bf94fe65b15a26a73d467b44c"
FACE_DATA_DIR = "2025_05_02_OhLoRA_v2/stylegan/stylegan_vectorfind_v7"


class PullError(RuntimeError):
    """A download that cannot be trusted or completed; the message names the file and the fix."""


@dataclass(frozen=True)
class HubRepo:
    repo: str
    dest: str
    revision: str = "main"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ("*.msgpack", "*.h5", "*.ot", "training_args.bin", ".gitattributes")


@dataclass(frozen=True)
class GitHubFiles:
    repo: str
    commit: str
    folder: str
    dest: str
    include: tuple[str, ...] = ("ohlora_z_vectors.csv", "ohlora_w_group_names.csv", "property_score_vectors/*_change_w_vector_*.csv")


@dataclass(frozen=True)
class RemoteFile:
    path: str  # path inside the destination folder
    url: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


@dataclass
class Endpoints:
    hub: str = HUB
    github_api: str = GITHUB_API
    github_raw: str = GITHUB_RAW


OHLORA_V2: list[HubRepo | GitHubFiles] = [
    HubRepo("EleutherAI/polyglot-ko-1.3b", "polyglot-ko-1.3b"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_output_message", "adapters/message"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_memory", "adapters/memory"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_summary", "adapters/summary"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_eyes_mouth_pose", "adapters/pose"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_SBERT", "sbert"),
    HubRepo("daebakgazua/250502_OhLoRA_StyleGAN_FineTuned", "stylegan", include=("stylegan_gen_vector_find_v7.pth",)),
    GitHubFiles("WannaBeSuperteur/AI_Projects", UPSTREAM_COMMIT, FACE_DATA_DIR, "face_data"),
]


def _wanted(path: str, include: tuple[str, ...], exclude: tuple[str, ...] = ()) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in include) and not any(fnmatch.fnmatch(path, p) for p in exclude)


def list_files(client: httpx.Client, source: HubRepo | GitHubFiles, ends: Endpoints) -> tuple[str, list[RemoteFile]]:
    """(resolved revision, files) of one source, from the hub or GitHub API."""
    if isinstance(source, HubRepo):
        info = client.get(f"{ends.hub}/api/models/{source.repo}/revision/{source.revision}").raise_for_status().json()
        sha = info["sha"]
        tree = client.get(f"{ends.hub}/api/models/{source.repo}/tree/{sha}", params={"recursive": "true"}).raise_for_status().json()
        files = [
            RemoteFile(e["path"], f"{ends.hub}/{source.repo}/resolve/{sha}/{e['path']}", int(e["size"]),
                       sha256=(e.get("lfs") or {}).get("oid"), git_sha1=None if e.get("lfs") else e["oid"])
            for e in tree
            if e.get("type") == "file" and _wanted(e["path"], source.include, source.exclude)
        ]
        return sha, files
    tree = client.get(f"{ends.github_api}/repos/{source.repo}/git/trees/{source.commit}", params={"recursive": "1"})
    entries = tree.raise_for_status().json()["tree"]
    prefix = source.folder.rstrip("/") + "/"
    files = [
        RemoteFile(e["path"][len(prefix):], f"{ends.github_raw}/{source.repo}/{source.commit}/{e['path']}", int(e["size"]), git_sha1=e["sha"])
        for e in entries
        if e.get("type") == "blob" and e["path"].startswith(prefix) and _wanted(e["path"][len(prefix):], source.include)
    ]
    return source.commit, files


def _verify(path: Path, remote: RemoteFile) -> None:
    size = path.stat().st_size
    if size != remote.size:
        raise PullError(f"{remote.path}: got {size} bytes, expected {remote.size}")
    if remote.sha256:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()
        digest.update(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    expected = remote.sha256 or remote.git_sha1
    if digest.hexdigest() != expected:
        path.unlink()
        raise PullError(
            f"{remote.path}: checksum mismatch (got {digest.hexdigest()}, expected {expected}); the corrupt download was "
            "deleted and nothing was installed: run `ohlora models pull` again"
        )


def _download(client: httpx.Client, remote: RemoteFile, target: Path) -> None:
    """Downloads (or resumes) one file into target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    have = target.stat().st_size if target.exists() else 0
    if have > remote.size:
        target.unlink()
        have = 0
    if have < remote.size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with client.stream("GET", remote.url, headers=headers, follow_redirects=True) as response:
            response.raise_for_status()
            if have and response.status_code != 206:  # the server ignored the range: start over
                have = 0
            with open(target, "ab" if have else "wb") as fh, tqdm(
                total=remote.size, initial=have, unit="B", unit_scale=True, desc=remote.path, leave=False
            ) as bar:
                for chunk in response.iter_bytes(1 << 16):
                    fh.write(chunk)
                    bar.update(len(chunk))
    _verify(target, remote)


@dataclass
class Installed:
    dest: Path
    revision: str
    files: list[str] = field(default_factory=list)


def pull(models: Path, sources: list[HubRepo | GitHubFiles] = OHLORA_V2, ends: Endpoints | None = None,
         echo=print) -> list[Installed]:
    ends = ends or Endpoints()
    partial_root = models / ".partial"
    installed = []
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0)) as client:
        for source in sources:
            name = source.repo
            revision, files = list_files(client, source, ends)
            if not files:
                raise PullError(f"{name}@{revision}: no files matched {source.include}")
            final = models / source.dest
            marker = final / ".ohlora-revision"
            if marker.exists() and marker.read_text().strip() == revision:
                echo(f"{name}: already installed at {revision[:12]} in {final}")
                installed.append(Installed(final, revision, [f.path for f in files]))
                continue
            staging = partial_root / source.dest
            for remote in tqdm(files, desc=f"{name}@{revision[:12]}", unit="file"):
                _download(client, remote, staging / remote.path)
            (staging / ".ohlora-revision").write_text(revision)
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
            echo(f"{name}: installed {len(files)} files at {revision[:12]} in {final}")
            installed.append(Installed(final, revision, [f.path for f in files]))
    shutil.rmtree(partial_root, ignore_errors=True)
    return installed


def ohlora_v2_config(models: Path) -> str:
    """A config for the original's weights (original dialect, StyleGAN face)."""
    lines = ["[llm]", f'base_model = "{models / "polyglot-ko-1.3b"}"', 'dialect = "original"', "",
             "[embedder]", f'model = "{models / "sbert"}"', "threshold = 0.95", "",
             "[face]", 'renderer = "stylegan"', f'checkpoint = "{models / "stylegan" / "stylegan_gen_vector_find_v7.pth"}"',
             f'face_data = "{models / "face_data"}"']
    for task in ("message", "memory", "summary", "pose"):
        lines += ["", f"[llm.tasks.{task}]", f'adapter = "{models / "adapters" / task}"']
    return "\n".join(lines) + "\n"


def write_manifest(models: Path, installed: list[Installed]) -> Path:
    path = models / "installed.json"
    path.write_text(json.dumps([{"dest": str(i.dest), "revision": i.revision, "files": i.files} for i in installed], indent=2))
    return path
