"""Configuration: one TOML file plus OHLORA_* environment overrides.

Precedence: command-line flags > environment (OHLORA_SECTION__FIELD, e.g.
OHLORA_LLM__DTYPE=bf16) > config file (--config or OHLORA_CONFIG) > defaults.
Every field is documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from ohlora.errors import ConfigError
from ohlora.llm.task import Dialect
from ohlora.redis_url import url_with_password

TASK_NAMES = ("message", "memory", "summary", "pose")

# The original's published adapters (UPSTREAM.md §2.1), used by the ohlora-v2 preset.
ORIGINAL_ADAPTERS = {
    "message": "daebakgazua/250502_OhLoRA_LLM_output_message",
    "memory": "daebakgazua/250502_OhLoRA_LLM_memory",
    "summary": "daebakgazua/250502_OhLoRA_LLM_summary",
    "pose": "daebakgazua/250502_OhLoRA_LLM_eyes_mouth_pose",
}


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 50051
    # Prometheus /metrics port; 0 picks a free one, None disables it.
    metrics_port: int | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    # Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    grace_seconds: float = 30.0
    log_level: str = "info"
    # TLS for links between hosts (docs/deploy.md): PEM files; both set = the port speaks TLS only.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Set too = mutual TLS: callers must present a certificate signed by this CA.
    tls_client_ca_file: str | None = None
    # Connections are closed (gracefully) after this long so clients re-resolve DNS and reach new
    # replicas after a scale-up; None keeps connections open for ever.
    max_connection_age_seconds: float | None = None


class TaskModel(BaseModel):
    """Which adapter and dialect one task uses on the shared base, or on a base of its own."""

    adapter: str | None = None
    dialect: Dialect | None = None  # None: the [llm] default
    # A base for this task alone (None: llm.base_model). Such a task runs in an LLM process of its own base
    # (`ohlora up` starts one process per base, LLMSettings.process_groups), and llm.base_adapter, trained on
    # llm.base_model, is not merged under it. mini: the reply on the 1.5B coder, the other tasks on the 0.5B.
    base_model: str | None = None


class LLMSettings(BaseModel):
    base_model: str = "EleutherAI/polyglot-ko-1.3b"
    dialect: Dialect = Dialect.ORIGINAL
    dtype: str = "auto"
    device: str = "auto"
    max_batch_size: int = 8
    max_queue: int = 64
    # A batch starts no earlier than this after its oldest request arrived, so requests sent together share it
    # (consolidated mode: a turn's reply and extraction). 0 = off; see docs/llm-services.md.
    batch_window_ms: float = 0.0
    # Rows of different tasks' adapters share one forward pass (peft adapter_names); false: one adapter per batch.
    mixed_adapter_batches: bool = True
    # When every task of a process uses the same adapter, merge it into the base weights at load (no LoRA cost per
    # token); false keeps it separate (e.g. to compare, or to serve the bare base too).
    merge_single_adapter: bool = True
    # An adapter merged into the base weights at load, under every task: a persona adapter whose tasks' own adapters
    # (if any) were trained on top of it with `ohlora train --base-adapter` (mini: the persona, and the memory
    # adapter over it). A task with no adapter of its own then runs on the persona alone.
    base_adapter: str | None = None
    # "int8": weight-only int8 linear layers (ohlora.llm.quantize); "int8-decode": an int8 copy for decoding steps
    # beside the float weights, which prefill keeps using; None: the weights as loaded.
    quantize: Literal["int8", "int8-decode"] | None = None
    # "korean": Oh-LoRA says only Korean pieces (Hangul, short ASCII, emoji); the output layer computes those rows
    # alone, which speeds decoding and keeps a multilingual base from slipping into Chinese (ohlora.llm.vocabulary).
    output_vocabulary: Literal["full", "korean"] = "full"
    trust_remote_code: bool = False
    # Each request samples from its own generator seeded by this, its prompt and adapter, so a run repeats
    # whatever batches requests share (benchmarks compare like with like); None = random.
    seed: int | None = None
    # Longest final input accepted by any task, in characters (bad-input guard).
    max_input_chars: int = 2000
    # CPU threads for torch in this process (0 = torch's default); pin when services share a machine.
    torch_threads: int = 0
    # Fault injection for tests and drills: every task call first sleeps this long.
    artificial_delay_seconds: float = 0.0
    tasks: dict[str, TaskModel] = Field(
        default_factory=lambda: {name: TaskModel(adapter=repo) for name, repo in ORIGINAL_ADAPTERS.items()}
    )

    def task(self, name: str) -> TaskModel:
        return self.tasks.get(name, TaskModel())

    def base_of(self, task: str) -> str:
        return self.task(task).base_model or self.base_model

    def base_for(self, tasks: list[str]) -> str:
        """The one base a process hosting `tasks` loads; tasks on different bases cannot share a process."""
        bases = {self.base_of(t) for t in tasks}
        if len(bases) != 1:
            groups = " and ".join(",".join(group) for group in self.process_groups())
            raise ConfigError(f"tasks {','.join(tasks)} are on different base models: run one LLM process per base "
                              f"(`ohlora serve llm --tasks ...` for {groups})")
        return bases.pop()

    def process_groups(self, tasks: Sequence[str] = TASK_NAMES) -> list[list[str]]:
        """`tasks` grouped by base model, in their order: what one LLM process each hosts (`ohlora up`)."""
        groups: dict[str, list[str]] = {}
        for task in tasks:
            groups.setdefault(self.base_of(task), []).append(task)
        return list(groups.values())

    def adapters_for(self, tasks: list[str]) -> tuple[str | None, dict[str, str]]:
        """(the adapter merged into the base, each task's own adapter) for a process hosting `tasks`.

        One adapter shared by every hosted task (mini's persona, before its memory adapter) is merged too,
        unless merge_single_adapter is off: unmerged, each LoRA layer adds two small matmuls to every token.
        llm.base_adapter goes under tasks on llm.base_model only: it was trained on that base.
        """
        base_adapter = self.base_adapter if self.base_for(tasks) == self.base_model else None
        adapters = {t: a for t in tasks if (a := self.task(t).adapter)}
        shared = set(adapters.values())
        if (base_adapter is None and self.merge_single_adapter and len(adapters) == len(tasks)
                and len(shared) == 1):
            return shared.pop(), {}
        return base_adapter, adapters

    def dialect_of(self, name: str) -> Dialect:
        return self.task(name).dialect or self.dialect


class EmbedderSettings(BaseModel):
    model: str = "daebakgazua/250502_OhLoRA_LLM_SBERT"
    # Recall threshold for this embedder's scores (the original uses 0.95 for its S-BERT's cosines).
    threshold: float = 0.95
    # A memory's score is its cosine plus this times the share of its words found in the turn (gateway.recall);
    # 0 is the original's cosine alone. Calibrated with the threshold (scripts/recall_threshold.py).
    lexical_weight: float = 0.0
    device: str = "auto"
    max_texts: int = 256
    # "onnx": on a CPU the model's transformer runs in ONNX Runtime (exported once, cached in <model>/onnx/);
    # tokenizer, prompts and pooling stay sentence-transformers'. Same vectors as "torch" within 1e-4, and
    # about twice as fast for one short query (e5-small on 2 cores: 12.5 ms vs 24.5 ms; docs/benchmarks.md,
    # recall). Needs onnxruntime (the mini extra). On a GPU torch runs either way.
    backend: Literal["torch", "onnx"] = "torch"


class FaceSettings(BaseModel):
    # "sketch" (drawn, no weights) or "stylegan" (the original's checkpoint + face data).
    renderer: Literal["sketch", "stylegan"] = "sketch"
    checkpoint: str = "models/stylegan/stylegan_gen_vector_find_v7.pth"
    # Folder with ohlora_z_vectors.csv, ohlora_w_group_names.csv and property_score_vectors/.
    face_data: str = "models/stylegan/face_data"
    device: str = "auto"
    dtype: str = "float32"
    # Expressions per Render call (one forward pass).
    max_batch: int = 128
    # Largest accepted absolute weight (the original's gestures stay within ±2).
    max_weight: float = 5.0
    min_size: int = 16
    max_size: int = 1024
    jpeg_quality: int = 90
    # On CPU, layers process at most this many activation values at once (see Synthesis.forward);
    # on CUDA the whole batch goes through every layer.
    cpu_chunk_elements: int = 1 << 20


class GatewaySettings(BaseModel):
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A file holding the Redis password (docker/Kubernetes secret); it is put into redis_url at load
    # time so the password itself never sits in a config file or the environment.
    redis_password_file: str | None = None
    key_prefix: str = "ohlora"
    # Where the model services listen (four may point at one consolidated process).
    message_address: str = "127.0.0.1:50061"
    memory_address: str = "127.0.0.1:50062"
    summary_address: str = "127.0.0.1:50063"
    pose_address: str = "127.0.0.1:50064"
    face_address: str = "127.0.0.1:50065"
    # Deadlines of downstream calls, seconds.
    reply_deadline: float = 180.0
    extract_deadline: float = 120.0
    summary_deadline: float = 120.0
    pose_deadline: float = 60.0
    embed_deadline: float = 15.0
    check_deadline: float = 10.0
    face_deadline: float = 30.0
    # A user's turn waits at most this long for their previous turn (incl. background work) to settle.
    turn_wait_seconds: float = 300.0
    max_text_chars: int = 500
    # Watch streams: default and highest frame rate, and frames rendered per face-service call.
    default_fps: float = 10.0
    max_fps: float = 30.0
    frames_per_batch: int = 5
    turn_log_length: int = 1000
    # Security and limits (docs/reliability.md). With auth on, every call needs "authorization: Bearer <token>"
    # (tokens come from `ohlora tokens create`) and the user is the token's; x-ohlora-user is then ignored.
    auth: bool = False
    # Per-user token buckets shared by all replicas (in Redis): sustained rate per minute and burst.
    turns_per_minute: float = 30.0
    turn_burst: int = 10
    calls_per_minute: float = 600.0
    call_burst: int = 60
    # Size limits: one memory's text, memories per user, one import file.
    max_memory_chars: int = 200
    max_memories: int = 1000
    max_import_bytes: int = 256 * 1024

    # TLS to the model services (PEM files). The CA set = TLS; cert and key set too = mutual TLS.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Name the services' certificates carry when addresses are IPs or differ from it.
    tls_server_name: str | None = None

    @model_validator(mode="after")
    def _password_from_file(self) -> "GatewaySettings":
        if self.redis_password_file is not None:
            self.redis_url = url_with_password(self.redis_url, read_secret(self.redis_password_file))
            self.redis_password_file = None  # applied once, even if the settings are validated again
        return self


class WebSettings(BaseModel):
    """`ohlora serve web`: the page and the OpenAI-compatible API, a client of the gateway (docs/web.md).

    It listens on server.host and server.port (8080 unless a port is set), with server.tls_* for HTTPS."""

    gateway_address: str = "127.0.0.1:50051"
    # TLS to the gateway (PEM files), as the gateway's own links: the CA set = TLS; cert and key too = mutual TLS.
    gateway_tls_ca_file: str | None = None
    gateway_tls_cert_file: str | None = None
    gateway_tls_key_file: str | None = None
    gateway_tls_server_name: str | None = None
    # The user of a request that names none (auth off; with auth on the token's user counts).
    default_user: str = "local"
    # The model id that /v1/models lists and /v1/chat/completions accepts.
    model_name: str = "ohlora"
    # Largest request body in bytes (413 beyond): a memory file import is the largest thing sent.
    max_body_bytes: int = 512 * 1024
    # The page's live face: frames per second and picture edge in pixels.
    face_fps: float = 10.0
    face_size: int = 256


def read_secret(path: str) -> str:
    """A secret file's content without the trailing newline editors and `echo` add."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OHLORA_", env_nested_delimiter="__", extra="forbid")

    server: ServerSettings = ServerSettings()
    llm: LLMSettings = LLMSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    face: FaceSettings = FaceSettings()
    gateway: GatewaySettings = GatewaySettings()
    web: WebSettings = WebSettings()


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Builds the settings; `overrides` (from CLI flags) win over env and file."""
    path = config_path or os.environ.get("OHLORA_CONFIG")
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")

    class _Settings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
            return tuple(sources)

    try:
        return _Settings(**overrides)
    except Exception as exc:  # pydantic's ValidationError lists every bad field
        raise ConfigError(f"invalid configuration: {exc}") from exc
