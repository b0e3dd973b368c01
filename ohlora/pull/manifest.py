"""What a pull installed, recorded so it can be checked and repeated.

Each installed folder holds `.ohlora-manifest.json`: the repository, the commit it came from, and the size and
sha256 of every file, written into the folder before it is moved into place (so a folder and its manifest
always arrive together). `<models>/installed.json` indexes the folders and their commits; it survives a
folder being deleted, so the next pull reinstalls the same commit. `ohlora models pull --check` re-hashes
every file against its folder's manifest, offline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ohlora.pull.sources import PullError
from ohlora.pull.transfer import Echo, file_digests

MANIFEST = ".ohlora-manifest.json"
INDEX = "installed.json"
LEGACY_MARKER = ".ohlora-revision"  # what versions before the manifest wrote (the commit only)


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    repo: str
    revision: str
    files: dict[str, FileRecord]

    def write(self, folder: Path) -> None:
        body = {"repo": self.repo, "revision": self.revision, "files": {p: asdict(r) for p, r in sorted(self.files.items())}}
        (folder / MANIFEST).write_text(json.dumps(body, indent=1) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "Manifest | None":
        path = folder / MANIFEST
        if not path.is_file():
            return None
        try:
            body = json.loads(path.read_text())
            return cls(body["repo"], body["revision"], {p: FileRecord(**r) for p, r in body["files"].items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise PullError(f"{path}: unreadable manifest ({exc}); delete {folder} and run `ohlora models pull` again") from exc


@dataclass(frozen=True)
class Installed:
    """One source as installed: its folder (relative to the models folder), repository and commit."""

    dest: str
    repo: str
    revision: str
    files: int


def write_index(models: Path, installed: list[Installed]) -> Path:
    path = models / INDEX
    path.write_text(json.dumps({"format": 2, "sources": [asdict(i) for i in installed]}, indent=1) + "\n")
    return path


def _index_entries(models: Path) -> list[dict]:
    path = models / INDEX
    if not path.is_file():
        return []
    try:
        body = json.loads(path.read_text())
    except ValueError:
        return []
    return body["sources"] if isinstance(body, dict) else body  # a list: the format before manifests


def recorded_revision(models: Path, dest: str) -> str | None:
    """The commit this models folder already uses for `dest`: from its manifest, the index, or an older marker."""
    folder = models / dest
    manifest = Manifest.read(folder)
    if manifest is not None:
        return manifest.revision
    for entry in _index_entries(models):
        if Path(entry["dest"]) in (Path(dest), folder):  # older indexes held absolute paths
            return entry["revision"]
    marker = folder / LEGACY_MARKER
    return marker.read_text().strip() if marker.is_file() else None


def check_installed(models: Path, echo: Echo) -> int:
    """Re-hashes every installed file against its manifest, one line each; returns the number of problems."""
    entries = [e for e in _index_entries(models) if "repo" in e]
    if not entries:
        raise PullError(f"{models}: no manifest to check against (no {INDEX} from this version's pull); "
                        f"run `ohlora models pull --dir {models}` first")
    problems = checked = 0
    for entry in entries:
        folder = models / entry["dest"]
        manifest = Manifest.read(folder)
        if manifest is None:
            echo(f"MISSING  {entry['dest']}/{MANIFEST}: the folder is gone or was not installed by `ohlora models pull`")
            problems += 1
            continue
        for path, record in sorted(manifest.files.items()):
            shown = f"{entry['dest']}/{path}"
            file = folder / path
            checked += 1
            if not file.is_file():
                echo(f"MISSING  {shown}")
                problems += 1
                continue
            sha256, _ = file_digests(file)
            if sha256 != record.sha256:
                echo(f"CHANGED  {shown}: sha256 {sha256}, the manifest says {record.sha256}")
                problems += 1
            else:
                echo(f"ok       {shown}")
    if problems:
        echo(f"{problems} problem(s) in {checked} files: delete the folders named above and run `ohlora models pull "
             f"--dir {models}` again (it reinstalls the recorded commits)")
    else:
        echo(f"all {checked} files verified (sha256) against the manifests in {models}")
    return problems
