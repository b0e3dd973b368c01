"""Every compose service's own command, run through the ohlora CLI with tiny models until it reports
SERVING, then a real turn through the layout's gateway: the compose files cannot drift from the code.

How a container's surroundings are replaced on this machine is in tests/deploy_support.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from deploy_support import OHLORA, Host, Started, chat, compose_config, health, in_profile, make_certificates, wait_serving
from ohlora.client import free_port
from ohlora.presets import default_models_dir
from ohlora.v1 import gateway_pb2

GPU_HOST_NAME = "ohlora-gpu"  # the name in the GPU host's certificate (OHLORA_TLS_SERVER_NAME's default)


def assert_full_turn(events: list[gateway_pb2.ChatEvent]) -> None:
    kinds = [e.WhichOneof("kind") for e in events]
    assert "reply_final" in kinds and "expression" in kinds and "error" not in kinds, events
    unreachable = [e.warning for e in events if e.HasField("warning") and "unavailable" in e.warning.lower()]
    assert not unreachable, f"a service of the layout was not reached: {unreachable}"


def assert_web_answers(address: str, user: str) -> None:
    """One chat completion through the web tier's OpenAI-compatible API."""
    import httpx

    body = {"model": "ohlora", "messages": [{"role": "user", "content": "로라야 안녕"}], "user": user}
    response = httpx.post(f"http://{address}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"], response.text


def wait_healthy(host: Host, handle: Started, service: dict, timeout: float = 30.0) -> None:
    """Runs the compose health check until it passes, as docker does after start_period."""
    deadline = time.monotonic() + timeout
    while True:
        done = host.healthcheck(handle, service)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle.name}: health check {service['healthcheck']['test']} keeps failing: "
                                 f"{done.stdout}{done.stderr}\n{handle.log()}")
        time.sleep(0.3)


def password_file(folder: Path) -> Path:
    path = folder / "redis_password"
    path.write_text(secrets.token_hex(16) + "\n")  # a trailing newline, as `echo` or an editor leaves it
    return path


@pytest.fixture(scope="module")
def single_host() -> dict:
    return compose_config("docker-compose.yml")


@pytest.mark.parametrize("profile", ["gpu", "one-gpu", "cpu"])
def test_a_layout_starts_from_its_compose_commands_and_answers_a_turn(profile, single_host, tiny_config, tmp_path):
    services = {name: s for name, s in single_host["services"].items() if in_profile(s, profile)}
    # The GPU layouts' weights (the original's, 6 GB from the internet) are stood in for by the tiny preset;
    # the cpu layout runs its real mini preset, prepared by its own one-off service into the models folder.
    config = None if profile == "cpu" else tiny_config
    host = Host(tmp_path, config, {"/run/secrets/redis_password": password_file(tmp_path)}, models=default_models_dir())
    try:
        for name in [n for n, s in services.items() if s["command"][0] == "models"]:
            done = host.run_once(name, services.pop(name))
            assert done.returncode == 0, f"{name} completes successfully (the others wait for it):\n{done.stdout}{done.stderr}"
        redis = host.start_redis("redis", services.pop("redis"))
        wait_healthy(host, redis, single_host["services"]["redis"])
        gateway_name = next(name for name, s in services.items() if s["command"] == ["serve", "gateway"])
        gateway_service = services.pop(gateway_name)
        web_service = services.pop("web")
        models = [host.start(name, s) for name, s in services.items()]
        wait_serving(models)
        for handle in models:
            wait_healthy(host, handle, services[handle.name])
        gateway = host.start(gateway_name, gateway_service)
        wait_serving([gateway])
        wait_healthy(host, gateway, gateway_service)
        assert_full_turn(chat(gateway.address, f"user-{profile}"))
        host.endpoints[("gateway", 50051)] = gateway.port  # every layout's gateway is "gateway" to the web tier
        web = host.start("web", web_service)
        wait_healthy(host, web, web_service, timeout=60)
        assert_web_answers(web.address, f"web-{profile}")
    finally:
        codes = host.stop_all()
    assert codes == {name: 0 for name in codes}, f"every process stops cleanly within its stop_grace_period: {codes}"


def test_redis_from_compose_wants_its_password_and_keeps_an_append_only_file(single_host, tmp_path):
    import redis

    password = password_file(tmp_path)
    host = Host(tmp_path, tmp_path / "unused.toml", {"/run/secrets/redis_password": password})
    try:
        handle = host.start_redis("redis", single_host["services"]["redis"])
        wait_healthy(host, handle, single_host["services"]["redis"])
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=handle.port).ping()
        client = redis.Redis(port=handle.port, password=password.read_text().strip())
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert password.read_text().strip() not in " ".join(subprocess.run(
            ["ps", "-o", "args=", "-p", str(handle.proc.pid)], capture_output=True, text=True).stdout.split()), \
            "the password is not on redis-server's command line"
    finally:
        codes = host.stop_all()
    assert set(codes.values()) == {0}, codes


def test_gateway_host_reaches_gpu_host_over_mutual_tls(tiny_config, tmp_path):
    certs = make_certificates(tmp_path / "tls", {"gpu": [GPU_HOST_NAME], "gateway": ["ohlora-gateway"]})
    ca = tmp_path / "tls" / "ca.crt"
    gpu_file = compose_config("docker-compose.gpu-host.yml", {"OHLORA_BIND_ADDRESS": "10.77.0.12"})
    addresses = {f"OHLORA_{task}_ADDRESS": f"{GPU_HOST_NAME}:{port}" for task, port in
                 [("MESSAGE", 50061), ("MEMORY", 50062), ("SUMMARY", 50063), ("POSE", 50064), ("FACE", 50065)]}
    gateway_file = compose_config("docker-compose.gateway-host.yml", addresses)

    def tls_secrets(name: str) -> dict[str, Path]:
        return {"/run/secrets/ca_cert": ca, "/run/secrets/host_cert": certs[name][0], "/run/secrets/host_key": certs[name][1]}

    gpu = Host(tmp_path / "gpu", tiny_config, tls_secrets("gpu"))
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gw").mkdir()
    gateway_host = Host(tmp_path / "gw", tiny_config, {**tls_secrets("gateway"), "/run/secrets/redis_password": password_file(tmp_path)})
    try:
        models = [gpu.start(name, s) for name, s in gpu_file["services"].items()]
        wait_serving(models)  # through mutual TLS, with the health check's own settings
        for handle in models:
            wait_healthy(gpu, handle, gpu_file["services"][handle.name])
        message = models[0]
        assert health(message.address, {}) != "SERVING", "plaintext is refused"
        assert health(message.address, {"OHLORA_HEALTH_TLS_CA": str(ca), "OHLORA_HEALTH_TLS_SERVER_NAME": GPU_HOST_NAME}) \
            != "SERVING", "a caller without a client certificate is refused"

        # The gateway host knows the GPU host only by the addresses given in its environment.
        gateway_host.endpoints.update({(GPU_HOST_NAME, h.compose_port): h.port for h in models})
        redis = gateway_host.start_redis("redis", gateway_file["services"]["redis"])
        wait_healthy(gateway_host, redis, gateway_file["services"]["redis"])
        gateway = gateway_host.start("gateway", gateway_file["services"]["gateway"])
        wait_serving([gateway])
        assert_full_turn(chat(gateway.address, "two-hosts"))
    finally:
        codes = {**gateway_host.stop_all(), **{f"gpu:{k}": v for k, v in gpu.stop_all().items()}}
    assert set(codes.values()) == {0}, codes


def test_the_pull_service_command_starts_a_real_download(single_host, tmp_path):
    """`docker compose run --rm pull`: its command parses and starts downloading into the models volume
    (here a dead loopback endpoint stands in for the hub, so it ends with the resumable-download error)."""
    pull = single_host["services"]["pull"]
    assert any(str(v).endswith(":/models:rw") for v in pull["volumes"]), "it writes into the models volume"
    models = tmp_path / "models"
    argv = [OHLORA if a == "ohlora" else a for a in pull["entrypoint"]] + [str(models) if a == "/models" else a
                                                                         for a in pull["command"]]
    env = {**os.environ, **{k: str(v) for k, v in (pull.get("environment") or {}).items()},
           "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OHLORA_PULL_MAX_WAIT": "0.05"}  # retried, briefly
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # 2 would be a usage error
    assert "running the command again resumes them" in done.stderr
