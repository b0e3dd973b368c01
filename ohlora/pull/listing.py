"""The file lists of a pull: every page of a Hub tree, a GitHub tree even when GitHub truncates it, and the
checks that a listing is complete before anything is downloaded (every include pattern matched, every
required file present)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import quote

from ohlora.pull.sources import Endpoints, GitHubFiles, HubRepo, PullError, Source
from ohlora.pull.transfer import Echo, Fetcher, RemoteFile


COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Listing:
    """One source at one commit: what the pull installs from it."""

    source: Source
    name: str  # the repository as the server calls it now (a renamed repo: its new name)
    revision: str  # the commit
    files: list[RemoteFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def wanted(path: str, include: tuple[str, ...], exclude: tuple[str, ...] = ()) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in include) and not any(fnmatch.fnmatch(path, p) for p in exclude)


def list_source(fetch: Fetcher, source: Source, revision: str, ends: Endpoints, echo: Echo) -> Listing:
    """The complete, checked listing of one source at `revision` (a branch, tag or commit)."""
    try:
        if isinstance(source, HubRepo):
            listing = _list_hub(fetch, source, revision, ends)
        else:
            listing = _list_github(fetch, source, revision, ends, echo)
    except (KeyError, TypeError, ValueError) as exc:  # an answer without the fields the APIs document
        raise PullError(f"{source.repo}@{revision}: the server's listing is not what the API documents "
                        f"({type(exc).__name__}: {exc}); check --hub-endpoint / --github-api") from exc
    if listing.name != source.repo:
        echo(f"{source.repo}: the repository is now {listing.name} (following the redirect)")
    _check_complete(listing)
    return listing


def _list_hub(fetch: Fetcher, source: HubRepo, revision: str, ends: Endpoints) -> Listing:
    what = f"{source.repo}@{revision}"
    info = fetch.json(f"{ends.hub}/api/models/{source.repo}/revision/{quote(revision, safe='')}", what)
    name, sha = info.get("id") or source.repo, info["sha"]
    files = []
    for page in fetch.pages(f"{ends.hub}/api/models/{name}/tree/{sha}", what, {"recursive": "true"}):
        for entry in page:
            if entry.get("type") != "file" or not wanted(entry["path"], source.include, source.exclude):
                continue  # directory entries, and what the source does not install
            files.append(_hub_file(entry, f"{ends.hub}/{name}/resolve/{sha}/{quote(entry['path'])}", what))
    return Listing(source, name, sha, files)


def _hub_file(entry: dict, url: str, what: str) -> RemoteFile:
    """LFS (and Xet-backed, which keep their `lfs` record) files are checked by sha256, the rest by git blob id."""
    lfs = entry.get("lfs")
    if lfs:
        return RemoteFile(entry["path"], url, int(lfs.get("size", entry["size"])), sha256=lfs["oid"])
    if entry.get("xetHash"):
        raise PullError(f"{what}: the listing gives no sha256 for {entry['path']} (a Xet file without its LFS record); "
                        "it cannot be verified")
    return RemoteFile(entry["path"], url, int(entry["size"]), git_sha1=entry["oid"])


def _list_github(fetch: Fetcher, source: GitHubFiles, revision: str, ends: Endpoints, echo: Echo) -> Listing:
    what = f"{source.repo}@{revision[:12]}"
    commit = revision
    if not COMMIT.fullmatch(revision):  # a branch or tag: the raw URLs need the commit it points at
        commit = fetch.json(f"{ends.github_api}/repos/{source.repo}/commits/{quote(revision, safe='')}", what)["sha"]
    trees = f"{ends.github_api}/repos/{source.repo}/git/trees"
    folder = source.folder.strip("/")
    tree = fetch.json(f"{trees}/{commit}", what, {"recursive": "1"})
    entries = [(e["path"][len(folder) + 1:], e) for e in tree["tree"] if e["path"].startswith(folder + "/")]
    if tree.get("truncated"):
        # GitHub cuts recursive listings of large repositories; its documented way out: walk down to the folder
        # one level at a time and list that subtree alone.
        echo(f"{what}: GitHub truncated the repository's tree listing; listing {folder} on its own")
        sha = commit  # a commit id names its root tree too
        for part in folder.split("/"):
            level = fetch.json(f"{trees}/{sha}", what)
            match = [e for e in level["tree"] if e["path"] == part and e.get("type") == "tree"]
            if not match:
                cut = " (that listing was truncated too)" if level.get("truncated") else ""
                raise PullError(f"{what}: no folder {part!r} on the way to {folder}{cut}; nothing was installed")
            sha = match[0]["sha"]
        tree = fetch.json(f"{trees}/{sha}", what, {"recursive": "1"})
        if tree.get("truncated"):
            raise PullError(f"{what}: GitHub truncated the tree listing of {folder} too, so missing files could not be "
                            "noticed; nothing was installed")
        entries = [(e["path"], e) for e in tree["tree"]]
    files = [RemoteFile(rel, f"{ends.github_raw}/{source.repo}/{commit}/{quote(folder + '/' + rel)}", int(e["size"]),
                        git_sha1=e["sha"])
             for rel, e in entries if e.get("type") == "blob" and wanted(rel, source.include, source.exclude)]
    return Listing(source, source.repo, commit, files)


def _check_complete(listing: Listing) -> None:
    """Refuses a listing that lacks what the source needs, before any byte is downloaded."""
    source, paths = listing.source, {f.path for f in listing.files}
    where = f"{listing.name}@{listing.revision[:12]}"
    unmatched = [p for p in source.include if not any(fnmatch.fnmatch(path, p) for path in paths)]
    if unmatched:
        raise PullError(f"{where}: nothing in the listing matches {', '.join(map(repr, unmatched))}; "
                        "nothing was installed (wrong repository or --revision?)")
    missing = [p for p in source.required if p not in paths]
    if missing:
        raise PullError(f"{where}: {len(missing)} of the {len(source.required)} expected files are not in the listing "
                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); nothing was installed")
