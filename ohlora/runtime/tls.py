"""TLS and mutual TLS for links between hosts, from PEM files only.

Certificates and keys are always read from files (docker secrets, Kubernetes Secrets mounted as
files), never from the environment, so a secret never shows up in `docker inspect` or a process
listing. One helper per side keeps the server, the gateway's channels and `ohlora health` in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from ohlora.config import GatewaySettings, ServerSettings


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


@dataclass(frozen=True)
class ClientTLS:
    """How a client reaches a server: plaintext without a CA, TLS with one, mutual TLS with cert and key too.

    One value for every blocking client (`ohlora health`, `ohlora.client.health_status`, `ohlora doctor`),
    so a check never talks plaintext to a port that only speaks TLS.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # the name in the server's certificate, when the address differs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ClientTLS":
        """The OHLORA_HEALTH_TLS_* variables `ohlora health` reads (set in containers whose port speaks TLS)."""
        env = os.environ if env is None else env
        return cls(env.get("OHLORA_HEALTH_TLS_CA"), env.get("OHLORA_HEALTH_TLS_CERT"), env.get("OHLORA_HEALTH_TLS_KEY"),
                   env.get("OHLORA_HEALTH_TLS_SERVER_NAME"))

    @classmethod
    def of_gateway(cls, settings: GatewaySettings) -> "ClientTLS":
        """What the gateway uses towards the model services."""
        return cls(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file, settings.tls_server_name)

    def channel(self, address: str) -> grpc.Channel:
        """A blocking channel to `address`; raises TLSConfigError when the settings are incomplete or unreadable."""
        credentials = channel_credentials(self.ca_file, self.cert_file, self.key_file)
        if credentials is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, credentials, options=name_override(self.server_name))
