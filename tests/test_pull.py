"""`ohlora models pull` against a local mirror serving files made here (same code path as the real hub)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from ohlora.pull import OHLORA_V2, GitHubFiles, HubRepo
from services.face.face_data import GROUPS, PASSED_OHLORA_NOS, PROPERTIES, write_face_data


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class Mirror:
    """Hub API (revision, tree, resolve) and GitHub API (tree) + raw files, with ranges, on loopback."""

    def __init__(self, root: Path) -> None:
        self.files: dict[str, bytes] = {}  # url path -> content
        self.json: dict[str, object] = {}
        self.corrupt: set[str] = set()
        self.cut_once: dict[str, int] = {}  # url path -> bytes to send before dropping the connection (once)
        self.ranges: list[str] = []
        rng = np.random.default_rng(0)
        for source in OHLORA_V2:
            if isinstance(source, HubRepo):
                sha = hashlib.sha1(source.repo.encode()).hexdigest()
                name = source.include[0] if source.include != ("*",) else "model.safetensors"
                content = {"config.json": json.dumps({"repo": source.repo}).encode(), name: rng.bytes(300_000),
                           "training_args.bin": b"skip me"}
                self.json[f"/hub/api/models/{source.repo}/revision/main"] = {"sha": sha}
                tree = []
                for path, data in content.items():
                    entry = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
                    if path.endswith((".safetensors", ".pth")):
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
                    tree.append(entry)
                    self.files[f"/hub/{source.repo}/resolve/{sha}/{path}"] = data
                self.json[f"/hub/api/models/{source.repo}/tree/{sha}"] = tree
            else:
                assert isinstance(source, GitHubFiles)
                faces = root / "faces"
                vectors = {(p, g): (lambda v: v / np.linalg.norm(v))(rng.standard_normal(512)) for p in PROPERTIES for g in GROUPS}
                write_face_data(faces, np.round(rng.standard_normal((27, 515)), 4), list(PASSED_OHLORA_NOS),
                                [GROUPS[i % 8] for i in range(27)], vectors)
                tree = [{"type": "tree", "path": source.folder, "sha": "0" * 40}]
                for path in sorted(p for p in faces.rglob("*") if p.is_file()):
                    rel = f"{source.folder}/{path.relative_to(faces).as_posix()}"
                    data = path.read_bytes()
                    tree.append({"type": "blob", "path": rel, "size": len(data), "sha": git_sha1(data)})
                    self.files[f"/raw/{source.repo}/{source.commit}/{rel}"] = data
                tree.append({"type": "blob", "path": "README.md", "size": 1, "sha": git_sha1(b"x")})
                self.json[f"/ghapi/repos/{source.repo}/git/trees/{source.commit}"] = {"tree": tree}
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = urlparse(self.path).path
                if path in mirror.json:
                    body = json.dumps(mirror.json[path]).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if path not in mirror.files:
                    self.send_error(404)
                    return
                data = mirror.files[path]
                if path in mirror.corrupt:
                    data = bytes([data[0] ^ 1]) + data[1:]
                start = 0
                if "Range" in self.headers:
                    mirror.ranges.append(path)
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = mirror.cut_once.pop(path, None)
                self.wfile.write(data[start:] if cut is None else data[start:cut])
                if cut is not None:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pull(self, models: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ohlora.cli", "models", "pull", "--dir", str(models), "--hub-endpoint", f"{self.base}/hub",
             "--github-api", f"{self.base}/ghapi", "--github-raw", f"{self.base}/raw"],
            capture_output=True, text=True, timeout=300,
        )


@pytest.fixture
def mirror(tmp_path):
    m = Mirror(tmp_path)
    yield m
    m.server.shutdown()


def test_full_pull_installs_verified_files_and_a_config(mirror, tmp_path):
    models = tmp_path / "models"
    done = mirror.pull(models)
    assert done.returncode == 0, done.stderr
    assert (models / "polyglot-ko-1.3b" / "model.safetensors").stat().st_size == 300_000
    assert not (models / "polyglot-ko-1.3b" / "training_args.bin").exists()
    assert (models / "stylegan" / "stylegan_gen_vector_find_v7.pth").exists()
    assert len(list((models / "face_data" / "property_score_vectors").glob("*.csv"))) == 24
    assert not (models / "face_data" / "README.md").exists() and not (models / ".partial").exists()
    from services.face.face_data import FaceBank

    assert len(FaceBank.load(models / "face_data").faces) == 27, "the face data loads as installed"
    config = (models / "ohlora-v2.toml").read_text()
    assert str(models / "adapters" / "pose") in config and 'renderer = "stylegan"' in config
    assert "config:" in done.stdout and "installed" in done.stdout
    again = mirror.pull(models)
    assert again.returncode == 0 and again.stdout.count("already installed") == len(OHLORA_V2)


def test_an_interrupted_pull_resumes(mirror, tmp_path):
    models = tmp_path / "models"
    big = next(p for p in mirror.files if p.endswith("model.safetensors"))
    mirror.cut_once[big] = 100_000
    first = mirror.pull(models)
    assert first.returncode == 1 and "running the command again resumes" in first.stderr
    assert not (models / "polyglot-ko-1.3b").exists(), "nothing half-installed in use"
    second = mirror.pull(models)
    assert second.returncode == 0, second.stderr
    assert big in mirror.ranges, "the second pull asked only for the missing bytes"
    assert (models / "polyglot-ko-1.3b" / "model.safetensors").stat().st_size == 300_000


def test_a_checksum_failure_is_clear_and_installs_nothing(mirror, tmp_path):
    models = tmp_path / "models"
    bad = next(p for p in mirror.files if "SBERT" in p and p.endswith("model.safetensors"))
    mirror.corrupt.add(bad)
    done = mirror.pull(models)
    assert done.returncode == 1
    assert "model.safetensors: checksum mismatch" in done.stderr and "nothing was installed" in done.stderr
    assert not (models / "sbert").exists()
    assert not (models / "ohlora-v2.toml").exists()
    mirror.corrupt.clear()
    assert mirror.pull(models).returncode == 0
    assert (models / "sbert" / "model.safetensors").exists()
