"""`ohlora doctor`: checks the machine, the models and the running services; every problem comes with its fix."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from ohlora.config import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _local_or_hub(what: str, value: str | None) -> Check:
    if not value:
        return Check(what, True, "none configured")
    if Path(value).exists():
        return Check(what, True, value)
    if value.startswith(("/", ".", "~")) or Path(value).suffix:
        return Check(what, False, f"{value} does not exist", "fix the path in the config, or run `ohlora models pull`")
    return Check(what, False, f"{value} is a hub id and is not downloaded here",
                 "run `ohlora models pull` (needs internet) or point the config at a local folder")


def system_checks() -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), platform.python_version(), "install Python 3.11 or 3.12")]
    try:
        import torch
    except ImportError:
        return checks + [Check("torch", False, "not installed", "pip install torch==2.13.0 (CPU) or a CUDA build")]
    checks.append(Check("torch", True, torch.__version__))
    checks.append(cpu_dtype_check())
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            checks.append(Check(f"gpu {i}", True, f"{torch.cuda.get_device_name(i)}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"))
    else:
        checks.append(Check("cuda", True, "no GPU visible: services run on the CPU (check CUDA_VISIBLE_DEVICES if you expected one)"))
    return checks


def cpu_dtype_check() -> Check:
    """What dtype "auto" gives on this CPU and why: bf16 only where it is native (docs/configuration.md)."""
    import os

    import torch

    from ohlora.runtime.device import choose_dtype, cpu_capability

    choice = choose_dtype("auto", torch.device("cpu"))
    return Check("cpu", True, f"{cpu_capability()} kernels, {os.cpu_count()} cores, torch threads "
                              f"{torch.get_num_threads()}; dtype auto on the CPU = {choice.name} ({choice.reason})")


def model_checks(settings: Settings) -> list[Check]:
    checks = [_local_or_hub("llm base", settings.llm.base_model)]
    if settings.llm.base_adapter:
        checks.append(_local_or_hub("base adapter (merged under the tasks on the llm base)", settings.llm.base_adapter))
    for task in ("message", "memory", "summary", "pose"):
        if own_base := settings.llm.task(task).base_model:
            checks.append(_local_or_hub(f"{task} base (its own)", own_base))
        checks.append(_local_or_hub(f"{task} adapter", settings.llm.task(task).adapter))
    checks.append(_local_or_hub("embedder", settings.embedder.model))
    if settings.face.renderer == "stylegan":
        checks.append(_local_or_hub("stylegan checkpoint", settings.face.checkpoint))
        checks.append(_local_or_hub("face data", settings.face.face_data))
    else:
        checks.append(Check("face", True, "sketch renderer (needs no weights)"))
    return checks


def redis_check(settings: Settings) -> Check:
    import redis

    from gateway.keys import SCHEMA_VERSION, Keys

    from ohlora.redis_url import redacted

    url = redacted(settings.gateway.redis_url)  # what is printed; the password (from its file) is not
    try:
        client = redis.Redis.from_url(settings.gateway.redis_url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        version = client.get(Keys(settings.gateway.key_prefix).schema())
    except redis.RedisError as exc:
        return Check("redis", False, f"{url}: {exc}", "`ohlora up` starts its own Redis; otherwise start one (redis-server --appendonly yes) or fix gateway.redis_url")
    if version is not None and version.decode() != SCHEMA_VERSION:
        return Check("redis", False, f"{url}: schema version {version.decode()}, this version writes {SCHEMA_VERSION}",
                     "use another gateway.key_prefix or database, or migrate the data")
    return Check("redis", True, f"{url} answers")


def service_checks(settings: Settings, gateway_address: str) -> list[Check]:
    from ohlora.client import health_status
    from ohlora.runtime.tls import ClientTLS, TLSConfigError

    g = settings.gateway
    model_tls = ClientTLS.of_gateway(g)  # the model services are checked the way the gateway reaches them
    targets = [("gateway", gateway_address, ""), ("message", g.message_address, "ohlora.v1.MessageService"),
               ("memory", g.memory_address, "ohlora.v1.MemoryService"), ("summary", g.summary_address, "ohlora.v1.SummaryService"),
               ("pose", g.pose_address, "ohlora.v1.PoseService"), ("face", g.face_address, "ohlora.v1.FaceService")]
    checks = []
    for name, address, service in targets:
        try:
            status = health_status(address, service, timeout=2.0, tls=None if name == "gateway" else model_tls)
        except TLSConfigError as exc:
            checks.append(Check(f"{name} service", False, f"{address}: {exc}", "fix the gateway.tls_* settings"))
            continue
        fix = {
            "UNAVAILABLE": f"nothing answers at {address}: start everything with `ohlora up` (or this one with "
                           f"`ohlora serve {'llm_' + name if name in ('message', 'memory', 'summary', 'pose') else name}`), or fix the address",
            "NOT_SERVING": "it is still loading its model (or stopping); wait and check again",
            "NOT_FOUND": f"the process at {address} does not host {service}: check which tasks it serves",
        }.get(status, f"health check said {status}")
        checks.append(Check(f"{name} service", status == "SERVING", f"{address}: {status}", "" if status == "SERVING" else fix))
    return checks


def run_doctor(settings: Settings, gateway_address: str, echo=print) -> int:
    checks = system_checks() + model_checks(settings) + [redis_check(settings)] + service_checks(settings, gateway_address)
    width = max(len(c.name) for c in checks)
    for c in checks:
        echo(f"{'ok ' if c.ok else 'BAD'}  {c.name.ljust(width)}  {c.detail}")
        if not c.ok:
            echo(f"     {''.ljust(width)}  fix: {c.fix}")
    problems = sum(not c.ok for c in checks)
    echo(f"\n{problems} problem{'s' if problems != 1 else ''} found" if problems else "\nall good")
    return 1 if problems else 0
