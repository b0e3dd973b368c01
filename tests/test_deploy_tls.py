"""TLS and secret-file settings: what an operator gets wrong first fails with a message, not a hang."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy_support import OHLORA, make_certificates
from ohlora.client import health_status
from ohlora.config import GatewaySettings, ServerSettings, load_settings
from ohlora.errors import ConfigError
from ohlora.redis_url import redacted
from ohlora.runtime import tls



def test_the_redis_password_comes_from_its_file_into_the_url(tmp_path, monkeypatch):
    secret = tmp_path / "redis_password"
    secret.write_text("p@ss:w/rd\n")
    monkeypatch.setenv("OHLORA_GATEWAY__REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("OHLORA_GATEWAY__REDIS_PASSWORD_FILE", str(secret))
    url = load_settings().gateway.redis_url
    assert url == "redis://:p%40ss%3Aw%2Frd@redis:6379/0"
    import redis

    assert redis.connection.parse_url(url)["password"] == "p@ss:w/rd", "redis-py reads back the same password"
    assert redacted(url) == "redis://:***@redis:6379/0", "what `ohlora doctor` prints"


def test_a_missing_password_file_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OHLORA_GATEWAY__REDIS_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_settings()


def test_half_a_tls_setting_is_refused():
    with pytest.raises(tls.TLSConfigError, match="both"):
        tls.server_credentials(ServerSettings(tls_cert_file="/x.crt"))
    with pytest.raises(tls.TLSConfigError, match="needs"):
        tls.server_credentials(ServerSettings(tls_client_ca_file="/ca.crt"))
    with pytest.raises(tls.TLSConfigError, match="CA"):
        tls.channel_credentials(None, "/c.crt", "/c.key")
    assert tls.server_credentials(ServerSettings()) is None and tls.channel_credentials(None) is None


def test_an_unreadable_certificate_names_the_file(tmp_path):
    with pytest.raises(tls.TLSConfigError, match=str(tmp_path / "missing.crt")):
        tls.channel_credentials(str(tmp_path / "missing.crt"))


def test_health_over_mutual_tls_needs_the_right_certificate(start_service, tmp_path, monkeypatch):
    certs = make_certificates(tmp_path / "tls", {"svc": ["ohlora-gpu"], "client": ["ohlora-gateway"]})
    ca = str(tmp_path / "tls" / "ca.crt")
    face = start_service("serve", "face", env={
        "OHLORA_SERVER__TLS_CERT_FILE": str(certs["svc"][0]), "OHLORA_SERVER__TLS_KEY_FILE": str(certs["svc"][1]),
        "OHLORA_SERVER__TLS_CLIENT_CA_FILE": ca})

    def health(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([OHLORA, "health", face.address, "--timeout", "2", *flags], capture_output=True, text=True)

    mutual = ["--tls-ca", ca, "--tls-cert", str(certs["client"][0]), "--tls-key", str(certs["client"][1])]
    import time

    deadline = time.monotonic() + 120
    while (done := health(*mutual)).returncode != 0:
        assert time.monotonic() < deadline, done.stderr + face.log()
        time.sleep(0.5)
    assert "SERVING" in done.stdout
    assert health().returncode == 1, "plaintext is refused"
    assert health("--tls-ca", ca).returncode == 1, "no client certificate, no answer"
    assert health("--tls-ca", ca, "--tls-cert", str(certs["client"][0])).returncode == 2, "a certificate without its key"
    # The client helper (`ohlora up`, doctor, tests) checks the same way: TLS where configured.
    client = tls.ClientTLS(ca, str(certs["client"][0]), str(certs["client"][1]))
    assert health_status(face.address, tls=client) == "SERVING"
    assert health_status(face.address, tls=tls.ClientTLS()) == "UNAVAILABLE", "plaintext is refused"
    for name, value in [("CA", ca), ("CERT", str(certs["client"][0])), ("KEY", str(certs["client"][1]))]:
        monkeypatch.setenv(f"OHLORA_HEALTH_TLS_{name}", value)
    assert health_status(face.address) == "SERVING", "without a TLS argument: the variables `ohlora health` reads"


def project_imports(module: str) -> set[str]:
    """Every ohlora.* module `module` imports, at the top or inside a function, and what those import in turn."""
    import ast
    import importlib.util

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # `from ohlora.config import ServerSettings`: a name, not a module
            continue
        if name in seen or spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if isinstance(node, ast.ImportFrom) and node.module else [])
            todo += [n for n in names if n.startswith("ohlora")]
    return seen


def test_the_config_does_not_import_the_tls_runtime():
    """ohlora.runtime.tls builds on the settings; the settings need nothing of it (no import circle)."""
    assert "ohlora.config" in project_imports("ohlora.runtime.tls")
    assert "ohlora.runtime.tls" not in project_imports("ohlora.config")


def test_gateway_settings_carry_no_tls_by_default():
    settings = GatewaySettings()
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == (None, None, None)


def test_a_maximum_connection_age_makes_clients_reconnect_and_re_resolve():
    from ohlora.runtime.server import server_options

    options = dict(server_options(ServerSettings(max_connection_age_seconds=300)))
    assert options["grpc.max_connection_age_ms"] == 300_000 and options["grpc.max_connection_age_grace_ms"] == 300_000
    assert "grpc.max_connection_age_ms" not in dict(server_options(ServerSettings()))
