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

    def standard(self, llm_env: dict[str, str] | None = None) -> "LocalStack":
        """message+pose in one process, memory+summary in another, the sketch face, one gateway."""
        self.fast = self.llm("message,pose", env=llm_env)
        self.background = self.llm("memory,summary", env=llm_env)
        self.face = self.service("serve", "face")
        wait_all_serving([self.fast, self.background, self.face])
        self.main = self.gateway(self.fast.address, self.background.address, self.background.address,
                                 self.fast.address, self.face.address)
        self.main.wait_serving()
        return self

    def consolidated(self, llm_env: dict[str, str] | None = None) -> "LocalStack":
        """What `ohlora up` runs: one LLM process for the four tasks, the sketch face, one gateway."""
        self.fast = self.background = self.llm("message,memory,summary,pose", env=llm_env)
        self.face = self.service("serve", "face")
        wait_all_serving([self.fast, self.face])
        address = self.fast.address
        self.main = self.gateway(address, address, address, address, self.face.address)
        self.main.wait_serving()
        return self

    def close(self) -> None:
        for handle in reversed(self.handles):
            handle.terminate()
        self.redis.stop()
