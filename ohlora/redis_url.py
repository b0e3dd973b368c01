"""Redis URLs with a password in them: built from a secret file, and shown without it.

Plain URL handling with no settings or gRPC imports, so `ohlora.config` can use it while it is being
defined (it used to live in `ohlora.runtime.tls`, which imports the config: an import circle).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def url_with_password(url: str, password: str) -> str:
    """A redis:// URL with the password put in (any password already in the URL is replaced)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def redacted(url: str) -> str:
    """The URL as it may be printed: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
