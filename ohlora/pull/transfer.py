"""HTTP for `ohlora models pull`: retries with backoff, resumable downloads, tokens that stay on their host.

Modelled on what the Hub's own client does (huggingface_hub `utils/_http.py`, `file_download.py`): connection
errors, dropped bodies, 429 and 5xx are retried with exponential backoff (a 429's or 503's Retry-After is
honoured), each retry says why on one line, and a download resumes from the bytes it already has. A CDN that
ignores Range (200 instead of 206) gets the file from the start. Every attempt goes back to the Hub's resolve
URL, so a resumed download gets a freshly signed CDN URL rather than reusing one that may have expired.
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tqdm import tqdm

from ohlora.pull.sources import PullError, TransferError

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Failures of the connection itself (refused, reset, timed out, a body cut short); a bad URL is not one of them.
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
MAX_PAGES = 10_000  # a listing that links to more pages than this is going round in circles

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: `retries` times after the first try, waiting first_wait, 2x, 4x ...
    up to max_wait. max_wait also caps a server's Retry-After, so a test (or an impatient user) can shorten it."""

    retries: int = 5
    first_wait: float = 1.0
    max_wait: float = 60.0

    def wait(self, failures: int, retry_after: float | None) -> float:
        wanted = retry_after if retry_after is not None else self.first_wait * 2 ** (failures - 1)
        return max(0.0, min(wanted, self.max_wait))


@dataclass(frozen=True)
class RemoteFile:
    """One file to install: where it goes (inside the source's folder), where it comes from, how to check it."""

    path: str
    url: str
    size: int
    sha256: str | None = None  # LFS files: the Hub lists their sha256
    git_sha1: str | None = None  # the rest: the git blob id


class Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's wish in seconds, when it said one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def shown(url: str) -> str:
    """A URL as it may be printed: without its query, which on a CDN carries a signature."""
    parts = urlsplit(str(url))
    return urlunsplit(parts._replace(query="", fragment=""))


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def check_status(response: httpx.Response, what: str) -> None:
    """Raises Transient for a status worth retrying, PullError (one line, with the likely fix) for other errors."""
    code = response.status_code
    if code < 400:
        return
    if code in RETRY_STATUSES:
        raise Transient(f"HTTP {code}", retry_after_seconds(response.headers.get("Retry-After")))
    hint = {401: "; set HF_TOKEN (or GITHUB_TOKEN) if the repository needs one",
            403: "; set HF_TOKEN (or GITHUB_TOKEN) if the repository needs one",
            404: "; check the repository name and --revision"}.get(code, "")
    raise PullError(f"{what}: HTTP {code} from {shown(response.url)}{hint}")


class EndpointTokens(httpx.Auth):
    """Bearer tokens by URL prefix. httpx drops the header when a redirect leaves the origin (the Hub's 302 to
    its CDN), and a request outside every prefix never gets one, so a token only goes where it belongs."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        url = str(request.url)
        for prefix, token in self.tokens.items():
            if url == prefix or url.startswith(prefix + "/"):
                request.headers["Authorization"] = f"Bearer {token}"
                break
        yield request


class Backoff:
    """Counts consecutive failures of one request or download and waits before the next try."""

    def __init__(self, policy: RetryPolicy, what: str, echo: Echo, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy, self.what, self.echo, self.sleep = policy, what, echo, sleep
        self.failures = 0

    def failed(self, exc: Transient) -> None:
        """Waits before the next try, or raises TransferError when the retries are used up."""
        self.failures += 1
        if self.failures > self.policy.retries:
            raise TransferError(f"{self.what}: {exc.reason}, still after {self.policy.retries} retries") from exc
        wait = self.policy.wait(self.failures, exc.retry_after)
        asked = f" (the server asked for {exc.retry_after:g} s)" if exc.retry_after is not None else ""
        self.echo(f"{self.what}: {exc.reason}; retry {self.failures}/{self.policy.retries} in {wait:.2f} s{asked}")
        self.sleep(wait)

    def progressed(self) -> None:
        """A try that moved the download forward: the next failure counts as the first again."""
        self.failures = 0


class Fetcher:
    """JSON listings and file downloads over one client, every request retried by the same policy."""

    def __init__(self, client: httpx.Client, policy: RetryPolicy, echo: Echo) -> None:
        self.client, self.policy, self.echo = client, policy, echo

    def get(self, url: str, what: str, params: dict[str, str] | None = None) -> httpx.Response:
        """GET with retries; API redirects (a renamed repository) are followed."""
        backoff = Backoff(self.policy, what, self.echo)
        while True:
            try:
                response = self.client.get(url, params=params, follow_redirects=True)
                check_status(response, what)
                return response
            except TRANSIENT_ERRORS as exc:
                backoff.failed(Transient(f"{type(exc).__name__}: {exc}"))
            except Transient as exc:
                backoff.failed(exc)

    def json(self, url: str, what: str, params: dict[str, str] | None = None) -> Any:
        return _decoded(self.get(url, what, params), what)

    def pages(self, url: str, what: str, params: dict[str, str] | None = None) -> Iterator[Any]:
        """Each page of a listing, following `Link: <...>; rel="next"` as the Hub paginates its trees."""
        seen: set[str] = set()
        next_url: str | None = url
        while next_url is not None:
            if next_url in seen or len(seen) >= MAX_PAGES:
                raise PullError(f"{what}: the listing's pages go round in circles at {shown(next_url)}")
            seen.add(next_url)
            response = self.get(next_url, what, params)
            yield _decoded(response, what)
            link = response.links.get("next", {}).get("url")
            next_url = str(response.url.join(link)) if link else None
            params = None  # the next link carries its own query

    def download(self, remote: RemoteFile, target: Path, what: str) -> None:
        """Downloads or resumes `remote` into `target` until it has all its bytes, retrying transient failures."""
        target.parent.mkdir(parents=True, exist_ok=True)
        backoff = Backoff(self.policy, f"{what}: {remote.path}", self.echo)
        with tqdm(total=remote.size, unit="B", unit_scale=True, desc=remote.path, leave=False) as bar:
            while True:
                have = target.stat().st_size if target.exists() else 0
                if have > remote.size:
                    target.unlink()
                    have = 0
                if have == remote.size:
                    return
                bar.reset(remote.size)
                bar.update(have)
                try:
                    self._attempt(remote, target, have, bar)
                except OSError as exc:  # writing: disk full, permissions; say which file
                    exc.filename = exc.filename or str(target)
                    raise
                except TRANSIENT_ERRORS as exc:
                    self._after_failure(backoff, target, have, Transient(f"{type(exc).__name__}: {exc}"))
                except Transient as exc:
                    self._after_failure(backoff, target, have, exc)

    @staticmethod
    def _after_failure(backoff: Backoff, target: Path, had: int, exc: Transient) -> None:
        if target.exists() and target.stat().st_size > had:
            backoff.progressed()
        backoff.failed(exc)

    def _attempt(self, remote: RemoteFile, target: Path, have: int, bar: tqdm) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        # Always from the Hub's URL: its redirect signs a fresh CDN URL for this attempt.
        with self.client.stream("GET", remote.url, headers=headers, follow_redirects=True) as response:
            check_status(response, remote.path)
            if have and response.status_code != 206:
                self.echo(f"{remote.path}: the server sent the whole file instead of the missing part; starting it over")
                have = 0
                bar.reset(remote.size)
            elif have and not _range_starts_at(response, have):
                target.unlink()  # the next try asks for the whole file
                raise Transient(f"the server sent another part than bytes {have}- ({response.headers['Content-Range']})")
            with open(target, "ab" if have else "wb") as fh:
                for chunk in response.iter_bytes():  # unbuffered: every byte that arrived before a drop is kept
                    fh.write(chunk)
                    bar.update(len(chunk))
        size = target.stat().st_size
        if size < remote.size:  # a body without Content-Length that ended early
            raise Transient(f"the connection closed after {size} of {remote.size} bytes")
        if size > remote.size:
            target.unlink()
            raise PullError(f"{remote.path}: the server sent {size} bytes, the listing says {remote.size}; "
                            "the download was deleted: run `ohlora models pull` again")


def _decoded(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise PullError(f"{what}: {shown(response.url)} did not answer JSON") from exc


def _range_starts_at(response: httpx.Response, offset: int) -> bool:
    """A 206 whose Content-Range (when it has one) starts where the staged file ends."""
    content_range = response.headers.get("Content-Range")
    return content_range is None or content_range.startswith(f"bytes {offset}-")


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    size = path.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def verify(path: Path, remote: RemoteFile) -> str:
    """Checks a downloaded file against the listing; returns its sha256 (for the manifest).

    A mismatch deletes the file and raises PullError naming it.
    """
    size = path.stat().st_size
    if size != remote.size:
        raise PullError(f"{remote.path}: got {size} bytes, expected {remote.size}")
    sha256, git_sha1 = file_digests(path)
    got, expected = (sha256, remote.sha256) if remote.sha256 else (git_sha1, remote.git_sha1)
    if got != expected:
        path.unlink()
        raise PullError(f"{remote.path}: checksum mismatch (got {got}, expected {expected}); the corrupt download was "
                        "deleted and nothing was installed: run `ohlora models pull` again")
    return sha256
