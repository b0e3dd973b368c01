"""Hosts one or more LLM tasks on one base model (one adapter per task) in one process.

Tasks whose config gives them different bases (`[llm.tasks.X] base_model`) need one process per base.

`ohlora serve llm_message` hosts one task; `ohlora serve llm --tasks ...` hosts several
on the same base (consolidated mode): the gateway only sees addresses.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

from ohlora.config import TASK_NAMES, Settings
from ohlora.errors import NotReady
from ohlora.llm.engine import AdapterGenerator, EngineConfig, LLMEngine
from ohlora.llm.task import Dialect, TaskStats
from ohlora.runtime.cpu_memory import loading_models
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import common_pb2

log = logging.getLogger(__name__)

# Task name -> the service package that holds its task and servicer.
TASK_SERVICES = {
    "message": "services.llm_message",
    "memory": "services.llm_memory",
    "summary": "services.llm_summary",
    "pose": "services.llm_pose",
}


def stats_message(stats: TaskStats) -> common_pb2.GenerationStats:
    return common_pb2.GenerationStats(
        attempts=stats.attempts,
        generated_tokens=stats.generated_tokens,
        prompt_tokens=stats.prompt_tokens,
        elapsed_ms=stats.elapsed_ms,
        fallback=stats.fallback,
    )


class LLMHost:
    """The engine (and, with the memory task, the embedder) behind a process's task servicers."""

    def __init__(self, settings: Settings, tasks: list[str]) -> None:
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown or not tasks:
            raise ValueError(f"unknown or no tasks {unknown or tasks}; choose from {', '.join(TASK_NAMES)}")
        settings.llm.base_for(tasks)  # a ConfigError now, not at load, for tasks on different bases
        self.settings = settings
        self.tasks = tasks
        self.engine: LLMEngine | None = None
        self.embedder = None

    @property
    def max_input_chars(self) -> int:
        return self.settings.llm.max_input_chars

    def dialect(self, task: str) -> Dialect:
        return self.settings.llm.dialect_of(task)

    def require_engine(self) -> LLMEngine:
        if self.engine is None:
            raise NotReady("the model is still loading; retry when health reports SERVING")
        return self.engine

    def generator(self, task: str) -> AdapterGenerator:
        engine = self.require_engine()
        delay = self.settings.llm.artificial_delay_seconds
        return engine.for_adapter(task if engine.has_adapter(task) else None, delay)

    def engine_config(self) -> EngineConfig:
        llm = self.settings.llm
        base_adapter, adapters = llm.adapters_for(self.tasks)
        return EngineConfig(
            base_model=llm.base_for(self.tasks),
            adapters=adapters,
            dtype=llm.dtype,
            device=llm.device,
            max_batch_size=llm.max_batch_size,
            max_queue=llm.max_queue,
            batch_window_ms=llm.batch_window_ms,
            mixed_adapter_batches=llm.mixed_adapter_batches,
            quantize=llm.quantize,
            trust_remote_code=llm.trust_remote_code,
            seed=llm.seed,
            base_adapter=base_adapter,
            output_vocabulary=llm.output_vocabulary,
        )

    async def load(self) -> None:
        if self.settings.llm.torch_threads > 0:
            import torch

            torch.set_num_threads(self.settings.llm.torch_threads)
        with loading_models():  # its temporary copies do not stay in the heap
            engine = await asyncio.to_thread(LLMEngine.load, self.engine_config())
        engine.start()
        await engine.warm_up()
        if "memory" in self.tasks:
            from services.llm_memory.embedder import Embedder

            embedder = await asyncio.to_thread(Embedder.load, self.settings.embedder)
            await embedder.encode_async(["안녕"], "query")
            self.embedder = embedder
        self.engine = engine
        log.info("loaded", extra={"fields": {"tasks": self.tasks, "adapters": engine.adapters}})

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    def bindings(self) -> list[ServiceBinding]:
        return [importlib.import_module(TASK_SERVICES[t] + ".servicer").binding(self) for t in self.tasks]
