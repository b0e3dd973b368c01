"""`ohlora models pull`: list and check every source first, then download, verify and install each one.

Order matters for what a user is left with when something fails. Every listing is fetched and checked for
completeness, and the free space for everything still missing is checked, before the first byte is
downloaded; so a wrong revision, a truncated listing or a small disk stops the pull with nothing changed.
Downloads are staged under `<models>/.partial/<dest>@<commit>` (a different commit's leftovers are discarded,
never mixed in), and the folders are moved into place only when every file of every source is verified, each
with its manifest: a pull installs everything it was asked for, or nothing.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import httpx
from tqdm import tqdm

from ohlora.pull.listing import Listing, list_source
from ohlora.pull.manifest import LEGACY_MARKER, FileRecord, Installed, Manifest, recorded_revision, write_index
from ohlora.pull.sources import OHLORA_V2, Endpoints, HubRepo, PullError, Source
from ohlora.pull.transfer import Echo, EndpointTokens, Fetcher, RetryPolicy, file_digests, verify

FREE_SPACE_MARGIN = 64 << 20  # bytes left over after the download, for the manifest, logs and rounding
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
ALL_HUB_REPOS = "*"  # the key of a `--revision REV` given without a repository


def pull(models: Path, sources: list[Source] = OHLORA_V2, ends: Endpoints | None = None, *,
         revisions: dict[str, str] | None = None, policy: RetryPolicy = RetryPolicy(), echo: Echo = print) -> list[Installed]:
    """Installs every source into `models` (or leaves it as it was) and writes the index; returns what is installed.

    `revisions` maps a repository (or ALL_HUB_REPOS) to the branch, tag or commit to install instead of the pinned
    or recorded one. Raises PullError with a one-line message for everything a user can meet: listings, checksums,
    the network after its retries, and the file system (disk full, permissions).
    """
    ends = ends or Endpoints()
    try:
        return _pull(models, sources, ends, revisions or {}, policy, echo)
    except OSError as exc:
        raise PullError(os_error_line(exc)) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise PullError(f"{type(exc).__name__}: {exc} (check --hub-endpoint, --github-api and --github-raw)") from exc


def os_error_line(exc: OSError) -> str:
    """An OSError as one line that says which file and what to do."""
    where = f" at {exc.filename}" if exc.filename else ""
    fix = {errno.ENOSPC: "free some space or pull into a folder on a larger disk (--dir)",
           errno.EFBIG: "the file system refuses files this large: pull into another folder (--dir)",
           errno.EACCES: "pull into a folder you can write (--dir)", errno.EPERM: "pull into a folder you can write (--dir)",
           errno.EROFS: "the file system is read-only: pull into another folder (--dir)",
           errno.ENOTDIR: "a file stands where a folder should be: pick another --dir"}.get(exc.errno, "check the models folder (--dir)")
    return f"file system error{where}: {exc.strerror or exc}; {fix}"


def choose_revision(source: Source, revisions: dict[str, str], models: Path) -> tuple[str, str]:
    """(revision, why): --revision, else the project's pin, else the commit recorded at the first pull, else main."""
    if source.repo in revisions:
        return revisions[source.repo], "--revision"
    if isinstance(source, HubRepo) and ALL_HUB_REPOS in revisions:
        return revisions[ALL_HUB_REPOS], "--revision"
    if source.pinned:
        return source.pinned, "pinned in the project"
    recorded = recorded_revision(models, source.dest)
    if recorded:
        return recorded, "the commit recorded at its first pull"
    return "main", "no commit pinned in the project yet (docs/models.md): following main once and recording the commit"


def _pull(models: Path, sources: list[Source], ends: Endpoints, revisions: dict[str, str], policy: RetryPolicy,
          echo: Echo) -> list[Installed]:
    partial_root = models / ".partial"
    models.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=HTTP_TIMEOUT, auth=EndpointTokens(ends.tokens())) as client:
        fetch = Fetcher(client, policy, echo)
        listings = []
        for source in sources:
            revision, why = choose_revision(source, revisions, models)
            listing = list_source(fetch, source, revision, ends, echo)
            echo(f"{listing.name}: {listing.revision[:12]} ({why}), {len(listing.files)} files, {_size(listing.size)}")
            listings.append(listing)
        missing = [listing for listing in listings if not _already_installed(models, listing, echo)]
        check_free_space(partial_root, missing)
        staged = [_stage(fetch, partial_root, listing, echo) for listing in missing]
    for listing, staging in zip(missing, staged):  # only once everything is verified: all or nothing
        _move_into_place(models, listing, staging, echo)
    shutil.rmtree(partial_root, ignore_errors=True)
    installed = [Installed(l.source.dest, l.name, l.revision, len(l.files)) for l in listings]
    write_index(models, installed)
    return installed


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _staging(partial_root: Path, listing: Listing) -> Path:
    return partial_root / f"{listing.source.dest}@{listing.revision}"


def _staged_bytes(staging: Path, listing: Listing) -> int:
    total = 0
    for remote in listing.files:
        path = staging / remote.path
        total += min(path.stat().st_size, remote.size) if path.is_file() else 0
    return total


def check_free_space(partial_root: Path, listings: list[Listing]) -> None:
    """Refuses to start when the disk cannot hold what is still to be downloaded (sizes from the listings)."""
    needed = sum(l.size - _staged_bytes(_staging(partial_root, l), l) for l in listings)
    if not needed:
        return
    partial_root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(partial_root).free
    if needed + FREE_SPACE_MARGIN > free:
        raise PullError(f"not enough free space in {partial_root.parent}: the pull needs {_size(needed)} more and "
                        f"{_size(free)} is free; free some space or pull into a folder on a larger disk (--dir)")


def _already_installed(models: Path, listing: Listing, echo: Echo) -> bool:
    """True when the folder holds exactly this listing at this commit (sizes checked; `--check` hashes)."""
    folder = models / listing.source.dest
    manifest = Manifest.read(folder)
    if manifest is None:
        return _adopt_legacy(folder, listing, echo)
    same = manifest.revision == listing.revision and manifest.files.keys() == {f.path for f in listing.files} and all(
        (folder / f.path).is_file() and (folder / f.path).stat().st_size == f.size for f in listing.files)
    if same:
        echo(f"{listing.name}: already installed at {listing.revision[:12]} in {folder}")
    return same


def _adopt_legacy(folder: Path, listing: Listing, echo: Echo) -> bool:
    """A folder from a version before manifests, at the same commit: checked in place and given its manifest."""
    marker = folder / LEGACY_MARKER
    if not marker.is_file() or marker.read_text().strip() != listing.revision:
        return False
    records = {}
    for remote in listing.files:
        path = folder / remote.path
        if not path.is_file() or path.stat().st_size != remote.size:
            return False
        sha256, git_sha1 = file_digests(path)
        if (remote.sha256 or remote.git_sha1) not in (sha256, git_sha1):
            return False
        records[remote.path] = FileRecord(remote.size, sha256)
    Manifest(listing.name, listing.revision, records).write(folder)
    marker.unlink()
    echo(f"{listing.name}: already installed at {listing.revision[:12]} in {folder} (verified, manifest written)")
    return True


def _discard_stale(staging: Path, echo: Echo) -> None:
    """Removes staged downloads of the same folder at another commit (or from before staging had commits)."""
    base = staging.name.split("@", 1)[0]
    if not staging.parent.is_dir():
        return
    for old in staging.parent.iterdir():
        if old != staging and (old.name == base or old.name.startswith(base + "@")):
            echo(f"{base}: discarding staged files of another revision ({old.name})")
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _stage(fetch: Fetcher, partial_root: Path, listing: Listing, echo: Echo) -> Path:
    """Downloads and verifies every file of a listing into its staging folder, with the manifest; returns the folder."""
    staging = _staging(partial_root, listing)
    _discard_stale(staging, echo)
    what = f"{listing.name}@{listing.revision[:12]}"
    records: dict[str, FileRecord] = {}
    for remote in tqdm(listing.files, desc=what, unit="file"):
        target = staging / remote.path
        if target.is_file() and target.stat().st_size == remote.size:
            try:  # complete from an interrupted run of the same commit
                records[remote.path] = FileRecord(remote.size, verify(target, remote))
                continue
            except PullError:
                echo(f"{what}: the staged {remote.path} was corrupt; downloading it again")
        fetch.download(remote, target, what)
        records[remote.path] = FileRecord(remote.size, verify(target, remote))
    for path in sorted(staging.rglob("*"), reverse=True):  # only the listed files are installed
        if path.is_file() and path.relative_to(staging).as_posix() not in records:
            path.unlink()
    Manifest(listing.name, listing.revision, records).write(staging)
    return staging


def _move_into_place(models: Path, listing: Listing, staging: Path, echo: Echo) -> None:
    """Replaces the installed folder by the staged one (renames on one file system)."""
    final = models / listing.source.dest
    final.parent.mkdir(parents=True, exist_ok=True)
    replaced = final.with_name(final.name + ".replaced")
    if final.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        final.rename(replaced)
    staging.rename(final)
    shutil.rmtree(replaced, ignore_errors=True)
    echo(f"{listing.name}: installed {len(listing.files)} files at {listing.revision[:12]} in {final}")


def ohlora_v2_config(models: Path) -> str:
    """A config for the original's weights (original dialect, StyleGAN face)."""
    lines = ["[llm]", f'base_model = "{models / "polyglot-ko-1.3b"}"', 'dialect = "original"', "",
             "[embedder]", f'model = "{models / "sbert"}"', "threshold = 0.95", "",
             "[face]", 'renderer = "stylegan"', f'checkpoint = "{models / "stylegan" / "stylegan_gen_vector_find_v7.pth"}"',
             f'face_data = "{models / "face_data"}"']
    for task in ("message", "memory", "summary", "pose"):
        lines += ["", f"[llm.tasks.{task}]", f'adapter = "{models / "adapters" / task}"']
    return "\n".join(lines) + "\n"
