"""A whole Oh-LoRA stack as local processes: Redis, model services, face, gateways.

Used by the end-to-end tests and the gateway benchmarks; every piece is a real process
speaking gRPC on loopback.
"""

from __future__ import annotations

from pathlib import Path

from ohlora.client import ServiceProcessHandle, free_port, wait_all_serving, wait_http_ready
from ohlora.redis_server import RedisServer


class LocalStack:
    def __init__(self, root: Path, config: Path) -> None:
        self.root = root
        self.config = config
        self.handles: list[ServiceProcessHandle] = []
        self.redis = RedisServer(root / "redis", free_port(), tied_to_parent=True).start()

    def service(self, *args: str, env: dict[str, str] | None = None) -> ServiceProcessHandle:
        handle = ServiceProcessHandle(list(args), free_port(), self.root / f"{args[1]}-{len(self.handles)}.log", env)
        self.handles.append(handle)
        return handle

    def llm(self, tasks: str, env: dict[str, str] | None = None) -> ServiceProcessHandle:
        return self.service("serve", "llm", "--tasks", tasks, "--config", str(self.config), env=env)

    def gateway(self, message: str, memory: str, summary: str, pose: str, face: str,
                env: dict[str, str] | None = None) -> ServiceProcessHandle:
        settings = {
            "OHLORA_GATEWAY__REDIS_URL": self.redis.url,
            "OHLORA_GATEWAY__MESSAGE_ADDRESS": message,
            "OHLORA_GATEWAY__MEMORY_ADDRESS": memory,
            "OHLORA_GATEWAY__SUMMARY_ADDRESS": summary,
            "OHLORA_GATEWAY__POSE_ADDRESS": pose,
            "OHLORA_GATEWAY__FACE_ADDRESS": face,
            **(env or {}),
        }
        return self.service("serve", "gateway", env=settings)

    def web(self, gateway: str, env: dict[str, str] | None = None) -> ServiceProcessHandle:
        """`ohlora serve web` in front of the gateway at `gateway`, ready (its gateway SERVING)."""
        handle = self.service("serve", "web", env={"OHLORA_WEB__GATEWAY_ADDRESS": gateway, **(env or {})})
        wait_http_ready(handle)
        return handle

    def _llms(self, layout: list[list[str]], env: dict[str, str] | None) -> None:
        """One LLM process per group of `layout`, split further by base model (a task on a base of its own gets a
        process of its own, LLMSettings.process_groups); then the face, and one gateway over them.
        `fast` is the process hosting the reply, `background` the one hosting the memory."""
        from ohlora.config import load_settings

        llm = load_settings(self.config).llm
        hosts: dict[str, ServiceProcessHandle] = {}
        for group in layout:
            for tasks in llm.process_groups(group):
                handle = self.llm(",".join(tasks), env=env)
                hosts.update({task: handle for task in tasks})
        self.fast, self.background = hosts["message"], hosts["memory"]
        self.face = self.service("serve", "face")
        wait_all_serving([*{id(h): h for h in hosts.values()}.values(), self.face])
        self.main = self.gateway(*(hosts[t].address for t in ("message", "memory", "summary", "pose")), self.face.address)
        self.main.wait_serving()

    def standard(self, llm_env: dict[str, str] | None = None) -> "LocalStack":
        """message+pose in one process, memory+summary in another, the sketch face, one gateway."""
        self._llms([["message", "pose"], ["memory", "summary"]], llm_env)
        return self

    def consolidated(self, llm_env: dict[str, str] | None = None) -> "LocalStack":
        """What `ohlora up` runs: one LLM process for the four tasks (one per base model where a task has its own:
        mini's reply), the sketch face, one gateway."""
        self._llms([["message", "memory", "summary", "pose"]], llm_env)
        return self

    def close(self) -> None:
        for handle in reversed(self.handles):
            handle.terminate()
        self.redis.stop()
