"""The Hugging Face Hub and GitHub, imitated on loopback with the behaviours of the real servers that an idealised
mirror leaves out, for `ohlora models pull` to meet in tests:

- Hub trees are paginated (`Link: <...>; rel="next"`, an opaque cursor) and list `directory` entries; LFS files
  carry an `lfs` record (sha256) and Xet-backed ones a `xetHash` beside it.
- The Hub's resolve URL answers an LFS file with a 302 to a second origin (the CDN) whose URL is signed; the
  CDN refuses a URL whose signature is wrong or expired, and never needs (nor should get) the Hub token.
- A renamed repository: the Hub API answers the old name with a relative 307 to the new one, GitHub's API with a
  301 to `/repositories/<id>/...`, GitHub's raw files with a 301 to the new name.
- GitHub truncates recursive tree listings of large repositories (`"truncated": true`).
- Scripted faults, one per matching request: a status (429 with Retry-After, 5xx), a body cut off after N bytes,
  a CDN answering a Range request with the whole file (200).

Every request is recorded (origin, path, Range, Authorization), so tests can check what the client sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

SIGNING_KEY = b"imitation-cdn"
REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Fault:
    """One misbehaviour, used up by the first request it matches (see HubImitation.fail)."""

    status: int | None = None  # answer this status instead (429, 500, 503 ...)
    retry_after: str | None = None  # with this Retry-After header
    drop_after: int | None = None  # send this many body bytes of a file, then close the connection
    ignore_range: bool = False  # answer a Range request with the whole file and 200
    origin: str | None = None  # only requests to this origin ("hub" = the API/resolve/raw server, or "cdn")


@dataclass
class HubRepoData:
    sha: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    xet: set[str] = field(default_factory=set)
    listed_sizes: dict[str, int] = field(default_factory=dict)  # what the listing claims, where it differs
    served: dict[str, bytes] = field(default_factory=dict)  # what resolve sends, where it differs from the listing


@dataclass
class GitHubRepoData:
    commit: str
    files: dict[str, bytes]  # repository path -> content
    repo_id: int = 0


@dataclass(frozen=True)
class Seen:
    origin: str
    path: str
    range: str | None
    authorization: str | None


class HubImitation:
    """Serves /hub (Hub API + resolve), /ghapi (GitHub API) and /raw (GitHub raw files) on one loopback origin,
    and the Hub's CDN on a second one."""

    def __init__(self, page_size: int = 50, signed_url_seconds: float = 3600.0) -> None:
        self.hub: dict[str, HubRepoData] = {}  # repository -> what `main` is now
        self.hub_commits: dict[str, dict[str, HubRepoData]] = {}  # repository -> every commit it had, by sha
        self.github: dict[str, GitHubRepoData] = {}
        self.hub_renamed: dict[str, str] = {}  # old name -> current name
        self.github_renamed: dict[str, str] = {}
        self.page_size = page_size
        self.signed_url_seconds = signed_url_seconds
        self.truncated: set[str] = set()  # "repository": GitHub truncates the root's recursive listing; "folder": every other
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._servers = [self._serve("hub"), self._serve("cdn")]
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_port}" for s in self._servers)

    # ---------------------------------------------------------------- content

    def add_hub_repo(self, repo: str, files: dict[str, bytes], lfs: set[str] = frozenset(), xet: set[str] = frozenset()) -> HubRepoData:
        """(Re)publishes a repository; its `main` moves to a new commit made from the content."""
        digest = hashlib.sha1(repo.encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha256(files[path]).digest())
        data = HubRepoData(digest.hexdigest(), dict(files), set(lfs), set(xet))
        self.hub[repo] = data
        self.hub_commits.setdefault(repo, {})[data.sha] = data
        return data

    def rename_hub_repo(self, old: str, new: str) -> None:
        self.hub[new], self.hub_commits[new] = self.hub.pop(old), self.hub_commits.pop(old)
        self.hub_renamed[old] = new

    def add_github_repo(self, repo: str, commit: str, files: dict[str, bytes]) -> None:
        self.github[repo] = GitHubRepoData(commit, dict(files), repo_id=1000 + len(self.github))

    def fail(self, name: str, *faults: Fault) -> None:
        """Queues faults for requests whose path (or, on the CDN, whose file's path) ends with `name`."""
        self.faults.setdefault(name, []).extend(faults)

    def seen(self, origin: str | None = None, containing: str = "") -> list[Seen]:
        return [r for r in self.requests if (origin is None or r.origin == origin) and containing in r.path]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    # ---------------------------------------------------------------- plumbing

    def _serve(self, origin: str) -> ThreadingHTTPServer:
        imitation = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                _Request(imitation, self, origin).answer()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _take_fault(self, origin: str, names: list[str]) -> Fault | None:
        with self._lock:
            for key, queue in self.faults.items():
                for i, fault in enumerate(queue):
                    if (fault.origin in (None, origin)) and any(n.endswith(key) for n in names):
                        return queue.pop(i)
        return None

    def _signature(self, blob: str, expires: int) -> str:
        return hmac.new(SIGNING_KEY, f"{blob}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _blob_name(self, sha256: str) -> str | None:
        for data in (d for commits in self.hub_commits.values() for d in commits.values()):
            for path in data.lfs:
                if hashlib.sha256(data.files[path]).hexdigest() == sha256:
                    return path
        return None


class _Request:
    """One request: records it, applies a queued fault, routes it."""

    def __init__(self, imitation: HubImitation, handler: BaseHTTPRequestHandler, origin: str) -> None:
        self.im, self.h, self.origin = imitation, handler, origin
        parts = urlsplit(handler.path)
        self.path, self.query = unquote(parts.path), parse_qs(parts.query)
        imitation.requests.append(Seen(origin, self.path, handler.headers.get("Range"), handler.headers.get("Authorization")))

    def answer(self) -> None:
        names = [self.path]
        if self.origin == "cdn" and (blob := self.im._blob_name(self.path.rsplit("/", 1)[-1])):
            names.append(blob)
        fault = self.im._take_fault(self.origin, names)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return self.json({"error": f"imitated {fault.status}"}, fault.status, headers)
        routes = self.CDN_ROUTES if self.origin == "cdn" else self.ROUTES
        for pattern, method in routes:
            if m := re.fullmatch(pattern, self.path):
                return method(self, fault, **m.groupdict())
        self.json({"error": "not found"}, 404)

    # ---------------------------------------------------------------- responses

    def json(self, body: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.h.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            self.h.send_header(k, v)
        self.h.end_headers()
        self.h.wfile.write(data)

    def redirect(self, status: int, location: str, headers: dict[str, str] | None = None) -> None:
        self.h.send_response(status)
        for k, v in {"Location": location, "Content-Length": "0", **(headers or {})}.items():
            self.h.send_header(k, v)
        self.h.end_headers()

    def file(self, data: bytes, fault: Fault | None, headers: dict[str, str] | None = None) -> None:
        """A file with Range support, unless a fault says to ignore the range or cut the body short."""
        start, wanted = 0, self.h.headers.get("Range")
        if wanted and not (fault and fault.ignore_range):
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(data):
                return self.json({"error": "range not satisfiable"}, 416)
            self.h.send_response(206)
            self.h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.h.send_response(200)
        for k, v in {"Content-Length": str(len(data) - start), "Accept-Ranges": "bytes", **(headers or {})}.items():
            self.h.send_header(k, v)
        self.h.end_headers()
        body = data[start:]
        if fault is not None and fault.drop_after is not None:
            self.h.wfile.write(body[:fault.drop_after])
            self.h.wfile.flush()
            self.h.close_connection = True
            return
        self.h.wfile.write(body)

    # ---------------------------------------------------------------- the Hub

    def _hub_repo(self, repo: str, rev: str) -> HubRepoData | None:
        """The repository at `rev` (main or a commit it had), or None after answering: a relative 307 for a
        renamed repository, a 404 for an unknown one or an unknown revision."""
        if repo in self.im.hub_renamed:
            self.redirect(307, self.h.path.replace(f"/{repo}/", f"/{self.im.hub_renamed[repo]}/", 1))
            return None
        if repo not in self.im.hub:
            self.json({"error": "Repository not found"}, 404)
            return None
        data = self.im.hub[repo] if rev == "main" else self.im.hub_commits[repo].get(rev)
        if data is None:
            self.json({"error": f"Invalid rev id: {rev}"}, 404)
        return data

    def hub_revision(self, fault: Fault | None, repo: str, rev: str) -> None:
        if (data := self._hub_repo(repo, rev)) is None:
            return
        self.json({"id": repo, "sha": data.sha, "siblings": [{"rfilename": p} for p in sorted(data.files)]})

    def hub_tree(self, fault: Fault | None, repo: str, rev: str) -> None:
        if (data := self._hub_repo(repo, rev)) is None:
            return
        folders = sorted({p.rsplit("/", 1)[0] for p in data.files if "/" in p})
        entries: list[dict] = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                               for f in folders]
        for path in sorted(data.files):
            content = data.files[path]
            size = data.listed_sizes.get(path, len(content))
            entry: dict = {"type": "file", "oid": git_sha1(content), "size": size, "path": path}
            if path in data.lfs:
                entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": size, "pointerSize": 134}
            if path in data.xet:
                entry["xetHash"] = hashlib.sha256(b"xet" + content).hexdigest()
            entries.append(entry)
        offset = int(base64.urlsafe_b64decode(self.query["cursor"][0]).decode()) if "cursor" in self.query else 0
        page = entries[offset:offset + self.im.page_size]
        headers = {}
        if offset + self.im.page_size < len(entries):
            cursor = base64.urlsafe_b64encode(str(offset + self.im.page_size).encode()).decode()
            headers["Link"] = f'<{self.im.url}/hub/api/models/{repo}/tree/{rev}?recursive=true&cursor={cursor}>; rel="next"'
        self.json(page, headers=headers)

    def hub_resolve(self, fault: Fault | None, repo: str, rev: str, path: str) -> None:
        if (data := self._hub_repo(repo, rev)) is None:
            return
        if path not in data.files:
            return self.json({"error": "Entry not found"}, 404)
        content = data.files[path]
        headers = {"X-Repo-Commit": data.sha, "ETag": f'"{git_sha1(content)}"'}
        content = data.served.get(path, content)
        if path in data.lfs:  # stored on the CDN: a signed, expiring URL on another origin
            blob = hashlib.sha256(content).hexdigest()
            expires = int((time.time() + self.im.signed_url_seconds) * 1000)  # ms, so short lifetimes are exact
            location = f"{self.im.cdn_url}/blobs/{blob}?Expires={expires}&Signature={self.im._signature(blob, expires)}"
            return self.redirect(302, location, {**headers, "X-Linked-Size": str(len(content))})
        self.file(content, fault, headers)

    def cdn_blob(self, fault: Fault | None, blob: str) -> None:
        expires = int(self.query.get("Expires", ["0"])[0])
        signature = self.query.get("Signature", [""])[0]
        if expires < time.time() * 1000 or not hmac.compare_digest(signature, self.im._signature(blob, expires)):
            return self.json({"error": "AccessDenied: signature does not match or has expired"}, 403)
        name = self.im._blob_name(blob)
        if name is None:
            return self.json({"error": "NoSuchKey"}, 404)
        content = next(d.files[name] for commits in self.im.hub_commits.values() for d in commits.values()
                       if name in d.lfs and hashlib.sha256(d.files[name]).hexdigest() == blob)
        self.file(content, fault)

    # ---------------------------------------------------------------- GitHub

    def _github_repo(self, repo: str) -> GitHubRepoData | None:
        """The repository, or None after answering: GitHub's 301 to /repositories/<id> for a renamed one, or a 404."""
        if repo in self.im.github_renamed:
            data = self.im.github[self.im.github_renamed[repo]]
            self.redirect(301, f"{self.im.url}{self.h.path.replace(f'/repos/{repo}', f'/repositories/{data.repo_id}', 1)}")
            return None
        if repo not in self.im.github:
            self.json({"message": "Not Found"}, 404)
            return None
        return self.im.github[repo]

    def github_tree(self, fault: Fault | None, repo: str, sha: str) -> None:
        if (data := self._github_repo(repo)) is not None:
            self._tree(data, sha)

    def github_tree_by_id(self, fault: Fault | None, repo_id: str, sha: str) -> None:
        self._tree(next(d for d in self.im.github.values() if d.repo_id == int(repo_id)), sha)

    def github_commit(self, fault: Fault | None, repo: str, ref: str) -> None:
        if (data := self._github_repo(repo)) is not None:
            self.json({"sha": data.commit})

    def _tree(self, data: GitHubRepoData, sha: str) -> None:
        folders = {""} | {p.rsplit("/", 1)[0] for p in data.files if "/" in p}
        folders |= {f.rsplit("/", i)[0] for f in list(folders) for i in range(1, f.count("/") + 1)}
        tree_sha = {f: hashlib.sha1(f"tree:{f}".encode()).hexdigest() for f in folders}
        here = "" if sha == data.commit else next((f for f, s in tree_sha.items() if s == sha), None)
        if here is None:
            return self.json({"message": "Not Found"}, 404)
        prefix = f"{here}/" if here else ""
        recursive = self.query.get("recursive", ["0"])[0] not in ("0", "false", "")
        below = lambda p: p.startswith(prefix) and p != here and (recursive or "/" not in p[len(prefix):])  # noqa: E731
        entries = [{"path": f[len(prefix):], "mode": "040000", "type": "tree", "sha": tree_sha[f]}
                   for f in sorted(folders) if f and below(f)]
        entries += [{"path": p[len(prefix):], "mode": "100644", "type": "blob", "sha": git_sha1(c), "size": len(c)}
                    for p, c in sorted(data.files.items()) if below(p)]
        truncated = recursive and ("repository" if not here else "folder") in self.im.truncated
        self.json({"sha": tree_sha[here], "tree": entries[:3] if truncated else entries, "truncated": truncated})

    def github_raw(self, fault: Fault | None, repo: str, commit: str, path: str) -> None:
        if repo in self.im.github_renamed:
            return self.redirect(301, f"/raw/{self.im.github_renamed[repo]}/{commit}/{quote(path)}")
        data = self.im.github.get(repo)
        if data is None or commit != data.commit or path not in data.files:
            return self.json({"error": "404: Not Found"}, 404)
        self.file(data.files[path], fault)

    ROUTES = [
        (rf"/hub/api/models/{REPO}/revision/(?P<rev>[^/]+)", hub_revision),
        (rf"/hub/api/models/{REPO}/tree/(?P<rev>[^/]+)", hub_tree),
        (rf"/hub/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", hub_resolve),
        (rf"/ghapi/repos/{REPO}/git/trees/(?P<sha>[^/]+)", github_tree),
        (r"/ghapi/repositories/(?P<repo_id>\d+)/git/trees/(?P<sha>[^/]+)", github_tree_by_id),
        (rf"/ghapi/repos/{REPO}/commits/(?P<ref>[^/]+)", github_commit),
        (rf"/raw/{REPO}/(?P<commit>[0-9a-f]{{40}})/(?P<path>.+)", github_raw),
    ]
    CDN_ROUTES = [(r"/blobs/(?P<blob>[0-9a-f]{64})", cdn_blob)]
