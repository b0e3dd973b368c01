"""The web tier's deployment: its Kubernetes manifest (validated like the others, tests/test_deploy_files.py), its
compose service, and that service's own command and health check run on this machine against a real gateway."""

from __future__ import annotations

import re

import httpx
import yaml

from deploy_support import REPO_ROOT, Host, compose_config
from ohlora.config import Settings
from test_deploy_commands import wait_healthy
from test_deploy_files import K8S, kubernetes_validate

WEB = K8S / "web.yaml"


def documents() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(WEB.read_text()) if d}


def test_the_web_manifest_validates_against_the_pinned_kubernetes_version():
    done = kubernetes_validate(WEB)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"Deployment", "Service", "NetworkPolicy"} <= set(documents())


def test_the_web_pods_probe_http_on_their_port_and_reach_the_gateway_service():
    docs = documents()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    port = container["ports"][0]
    assert int(env["OHLORA_SERVER__PORT"]) == port["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    gateway = [d for d in yaml.safe_load_all((K8S / "gateway.yaml").read_text()) if d and d["kind"] == "Service"][0]
    host, gateway_port = re.fullmatch(r"dns:///([a-z-]+):(\d+)", env["OHLORA_WEB__GATEWAY_ADDRESS"]).groups()
    assert host == gateway["metadata"]["name"] and int(gateway_port) in [p["port"] for p in gateway["spec"]["ports"]]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]
    assert docs["NetworkPolicy"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    fields = {f"OHLORA_WEB__{f}".upper() for f in Settings.model_fields["web"].annotation.model_fields}
    assert {k for k in env if k.startswith("OHLORA_WEB__")} <= fields


def test_every_layout_reaches_its_gateway_by_the_name_the_web_tier_uses():
    config = compose_config("docker-compose.yml")["services"]
    web = config["web"]
    assert "profiles" not in web, "the web tier runs in every layout"
    host, port = web["environment"]["OHLORA_WEB__GATEWAY_ADDRESS"].split(":")
    gateways = [s for s in config.values() if (s.get("command") or [])[:2] == ["serve", "gateway"]]
    assert len(gateways) == 3
    for gateway in gateways:
        assert host in gateway["networks"]["public"]["aliases"] and gateway["environment"]["OHLORA_SERVER__PORT"] == port
    assert web["healthcheck"]["test"][:5] == ["CMD", "ohlora", "health", "127.0.0.1:8080", "--http"]


def test_the_compose_web_service_serves_the_page_in_front_of_a_gateway(shared_stack, tmp_path):
    service = compose_config("docker-compose.yml")["services"]["web"]
    host = Host(tmp_path, None, {})
    host.endpoints[("gateway", 50051)] = shared_stack.main.port
    web = host.start("web", service)
    try:
        wait_healthy(host, web, service, timeout=60)
        page = httpx.get(f"http://{web.address}/", timeout=10)
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert httpx.get(f"http://{web.address}/static/app.js", timeout=10).status_code == 200
    finally:
        codes = host.stop_all()
    assert codes == {"web": 0}, "SIGTERM stops it cleanly"
    # The health check fails when the gateway is away: the web tier is not ready without it.
    host = Host(tmp_path / "alone", None, {})
    (tmp_path / "alone").mkdir()
    host.endpoints[("gateway", 50051)] = 1
    web = host.start("web", service)
    try:
        import time

        time.sleep(3)
        assert host.healthcheck(web, service).returncode == 1
    finally:
        host.stop_all()
    assert (REPO_ROOT / "deploy" / "k8s" / "web.yaml").exists()


def test_the_web_port_speaks_mutual_tls_like_the_gateways(shared_stack, tmp_path):
    """server.tls_* make the web tier's port HTTPS that wants a client certificate; `ohlora health --http` checks it."""
    import subprocess
    import time

    from deploy_support import OHLORA, make_certificates
    from ohlora.client import check_http_ready
    from ohlora.runtime.tls import ClientTLS

    certs = make_certificates(tmp_path / "tls", {"web": ["ohlora-web"], "caller": ["caller"]})
    ca = str(tmp_path / "tls" / "ca.crt")
    (web_cert, web_key), (caller_cert, caller_key) = certs["web"], certs["caller"]
    web = shared_stack.service("serve", "web", env={
        "OHLORA_WEB__GATEWAY_ADDRESS": shared_stack.main.address, "OHLORA_SERVER__TLS_CERT_FILE": str(web_cert),
        "OHLORA_SERVER__TLS_KEY_FILE": str(web_key), "OHLORA_SERVER__TLS_CLIENT_CA_FILE": ca})
    caller = ClientTLS(ca, str(caller_cert), str(caller_key), "ohlora-web")
    deadline = time.monotonic() + 60
    while check_http_ready(web.address, 2.0, caller).status != "SERVING":
        assert time.monotonic() < deadline and web.proc.poll() is None, web.log()
        time.sleep(0.2)
    check = [OHLORA, "health", web.address, "--http", "--tls-ca", ca]
    with_cert = subprocess.run([*check, "--tls-cert", str(caller_cert), "--tls-key", str(caller_key), "--tls-server-name",
                                "ohlora-web"], capture_output=True, text=True, timeout=30)
    assert with_cert.returncode == 0, with_cert.stderr
    assert subprocess.run(check, capture_output=True, text=True, timeout=30).returncode == 1, "no client certificate: refused"
    assert check_http_ready(web.address, 2.0, ClientTLS()).status == "UNAVAILABLE", "no plaintext on a TLS port"
    assert web.terminate() == 0
