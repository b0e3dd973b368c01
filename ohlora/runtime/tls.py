"""TLS and mutual TLS for links between hosts, from PEM files only.

Certificates and keys are always read from files (docker secrets, Kubernetes Secrets mounted as
files), never from the environment, so a secret never shows up in `docker inspect` or a process
listing. One helper per side keeps the server, the gateway's channels and `ohlora health` in step.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import grpc

from ohlora.config import ServerSettings


class TLSConfigError(ValueError):
    """A TLS setting is incomplete or names a file that cannot be read."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from exc


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """Credentials for the listening port, or None when the server is configured without TLS."""
    cert, key, client_ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if cert is None and key is None:
        if client_ca is not None:
            raise TLSConfigError("server.tls_client_ca_file needs server.tls_cert_file and server.tls_key_file")
        return None
    if cert is None or key is None:
        raise TLSConfigError("set both server.tls_cert_file and server.tls_key_file (or neither)")
    pair = [(_read(key, "TLS key"), _read(cert, "TLS certificate"))]
    if client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, root_certificates=_read(client_ca, "client CA"), require_client_auth=True)


def bind(server: grpc.Server | grpc.aio.Server, settings: ServerSettings) -> int:
    """Opens the configured port, with TLS when it is configured; returns the port (0 = failed)."""
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def channel_credentials(ca_file: str | None, cert_file: str | None = None,
                        key_file: str | None = None) -> grpc.ChannelCredentials | None:
    """Client credentials: None without a CA (plaintext); with cert and key, mutual TLS."""
    if ca_file is None:
        if cert_file is not None or key_file is not None:
            raise TLSConfigError("a client certificate needs the CA file that signed the server's certificate")
        return None
    if (cert_file is None) != (key_file is None):
        raise TLSConfigError("set both the client certificate and its key (or neither)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA"),
        private_key=_read(key_file, "client key") if key_file else None,
        certificate_chain=_read(cert_file, "client certificate") if cert_file else None,
    )


def name_override(server_name: str | None) -> list[tuple[str, str]]:
    """Channel options that check the server's certificate against `server_name` instead of the address."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []


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
