"""The `keel` command: run the whole platform, one service, or its workers; migrate the database."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from keel import services
from keel.core import heap, http_server
from keel.core.bus.errors import BrokerUnavailable
from keel.core.errors import StartupError
from keel.core.logging import setup_logging
from keel.core.service import ServiceSpec
from keel.core.settings import Settings, invalid_settings
from keel.ops.cli import app as dlq_app
from keel.orders.cli import app as orders_app

# soft_wrap: a line is never cut at the terminal width, nor at 80 columns when stderr is a file or a pipe.
console = Console(stderr=True, soft_wrap=True)
STARTUP_FAILURE = 3  # what uvicorn and granian exit with when the application's start-up fails


class _Options:
    """The global options (`keel --debug COMMAND`), set before the command runs."""

    debug = False


class _KeelCommand(typer.Typer):
    """An error the operator can fix (a bad setting, a dependency refusing us or away) is one line
    saying what and how to fix it, and exit 2, from every command; `keel --debug` shows its traceback
    instead."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (ValidationError, StartupError, BrokerUnavailable) as exc:
            if _Options.debug or (isinstance(exc, ValidationError) and not exc.title.endswith("Settings")):
                raise  # --debug, or a model that is not settings: a bug, its traceback says where
            if isinstance(exc, ValidationError):
                lines = invalid_settings(exc)
            elif isinstance(exc, BrokerUnavailable):  # a tool (`keel orders produce`) needs the broker now
                lines = [f"{exc}; check --brokers or KAFKA_BROKERS and that the broker is up"]
            else:
                lines = [str(exc)]
            for line in lines:
                console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
            sys.exit(2)


app = _KeelCommand(help="Keel: five event-driven services and the platform they share.", no_args_is_help=True)


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an error instead of its one line")
    ] = False,
) -> None:
    _Options.debug = debug


ServiceArg = Annotated[str, typer.Argument(help=f"one of: {', '.join(services.NAMES)}")]
PortOpt = Annotated[int, typer.Option("--port", "-p", help="HTTP port")]
HostOpt = Annotated[str, typer.Option("--host", help="interface to bind (0.0.0.0 in containers)")]


def _serve_http(
    fastapi_app: object, host: str, port: int, settings: Settings, sock: socket.socket | None = None
) -> None:
    if _Options.debug:
        fastapi_app.one_line_startup_errors = False  # type: ignore[attr-defined]
    heap.settle()
    # granian with the head deadline and bound (keel.core.http_server); Ctrl-C / SIGTERM drain and
    # return. `sock`: the listening socket a `--workers` parent bound and handed down.
    if not http_server.serve(fastapi_app, host, port, settings, sock):
        # The start-up failed (its one line is logged): exit non-zero, so a supervisor sees it.
        raise typer.Exit(STARTUP_FAILURE)


def _settings_for_serving() -> Settings:
    """`keel serve`/`keel worker`: the settings, or one line and exit 2 for a setting that must not be
    served (the default SECRET), before anything starts."""
    from keel.core.secret import refuse_default_secret

    settings = Settings()
    refuse_default_secret(settings)
    return settings


def _load(name: str) -> list[ServiceSpec]:
    try:
        return [services.load(name)]
    except services.UnknownService as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def up(
    port: PortOpt = 8000,
    host: HostOpt = "127.0.0.1",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="the folder for embedded PostgreSQL, objects and the secret [default: KEEL_DATA_DIR, .keel]",
        ),
    ] = None,
) -> None:
    """Every service, worker and relay in one process, on embedded defaults (PostgreSQL from a wheel,
    in-memory bus, in-process cache, local storage) unless settings point at real infrastructure.
    One `keel up` per data folder: a second one on the same folder stops at once, naming the first."""
    from keel.core.data_lock import check_port_free, hold_data_dir
    from keel.core.devbus import dev_door_opens
    from keel.core.errors import StartupError
    from keel.core.runtime import build_app
    from keel.core.secret import embedded_settings

    settings = Settings()
    setup_logging(settings.log_level)
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    base = f"http://{_url_host(host)}:{port}"
    try:
        # Both before anything starts: PostgreSQL, the migrations and the services come after.
        lock = hold_data_dir(settings.data_dir, base)
        check_port_free(host, port)
        settings = embedded_settings(settings)  # SECRET unset: this data folder's own, generated once
    except StartupError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    settings = _public_base_url(settings, host, base)
    specs = services.load_all()
    console.print(f"[bold]keel up[/bold] on {base}: every service in one process (data: {settings.data_dir})")
    for spec in specs:
        console.print(
            f"  [cyan]{spec.name:<18}[/cyan] {'  '.join(_prefixes(spec)) or '(worker: no HTTP routes)'}"
        )
    console.print(f"  docs {base}/docs   health {base}/healthz {base}/readyz   metrics {base}/metrics")
    if not settings.public_base_url:
        console.print("  links in responses are relative: set PUBLIC_BASE_URL to the address clients use")

    def status(line: str) -> None:
        console.print(f"[dim]{line}[/dim]")

    door = dev_door_opens(host, settings.dev_door)
    if not door:
        console.print(f"  dev bus door {base}/_dev/bus shut: not a loopback bind (KEEL_DEV_DOOR=1 opens it)")
    platform = build_app(specs, settings, embedded=True, dev_door=door, title="Keel platform", status=status)
    try:
        _serve_http(platform, host, port, settings)
    finally:
        if lock is not None:
            lock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _public_base_url(settings: Settings, host: str, base: str) -> Settings:
    """`keel up` hands out absolute links (playlists, signed files, audio) to its own address unless
    PUBLIC_BASE_URL says otherwise. An unspecified bind (0.0.0.0, ::) names no address a client could
    use, so links stay relative there. Never taken from a request's Host header: the client controls
    it, and cached pages would carry it to everyone."""
    if settings.public_base_url or _is_unspecified(host):
        return settings
    return settings.model_copy(update={"public_base_url": base})


def _is_unspecified(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name: clients can use it


def _prefixes(spec: ServiceSpec) -> list[str]:
    """The distinct leading path segments a service serves, for the start-up listing."""
    seen: dict[str, None] = {}
    for router in spec.routers():
        for route in router.routes:
            parts = [p for p in getattr(route, "path", "").split("/") if p]
            depth = 2 if parts[:1] == ["v1"] else 1
            seen.setdefault("/" + "/".join(parts[:depth]), None)
    return list(seen)


def _serve_address(service: str, host: str | None, port: int | None) -> tuple[str, int]:
    """Flags win; the orders seed's HTTP_ADDR (default `:8081`) is that service's default address."""
    default = ("127.0.0.1", 8000)
    if service == "orders":
        from keel.orders.settings import OrderSettings, parse_addr

        default = parse_addr(OrderSettings().http_addr)
    return host or default[0], port or default[1]


@app.command()
def serve(
    service: ServiceArg,
    port: Annotated[int | None, typer.Option("--port", "-p", help="HTTP port [default: 8000]")] = None,
    host: Annotated[str | None, typer.Option("--host", help="interface to bind [default: 127.0.0.1]")] = None,
    api_only: Annotated[
        bool,
        typer.Option(
            "--api-only",
            help="HTTP only, no outbox relay or consumers: run `keel worker SERVICE` beside it (production)",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="HTTP processes sharing the port; /metrics of any of them sums them all",
        ),
    ] = 1,
    fd: Annotated[int | None, typer.Option("--fd", hidden=True, help="listening socket (--workers)")] = None,
) -> None:
    """One service's API with its own relay and consumers, against the configured infrastructure
    (orders: HTTP_ADDR, default `:8081`, unless --host/--port are given). With `--api-only` the relay
    and consumers are left to `keel worker SERVICE`; `--workers N` runs N processes of the API (each
    with its own relay and consumers unless `--api-only`)."""
    from keel.core.runtime import build_app

    settings = _settings_for_serving()
    setup_logging(settings.log_level)
    bind_host, bind_port = _serve_address(service, host, port)
    if workers > 1 and fd is None:
        from keel.core.processes import self_command, serve_workers

        specs = _load(service)  # an unknown service fails here, not N times in the workers
        argv = [
            *self_command(),
            *(["--debug"] if _Options.debug else []),
            *["serve", specs[0].name, "--host", bind_host, "--port", str(bind_port)],
        ]
        console.print(
            f"[bold]keel serve {service}[/bold]: {workers} HTTP processes on {bind_host}:{bind_port}"
        )
        raise typer.Exit(
            serve_workers([*argv, *(["--api-only"] if api_only else [])], workers, bind_host, bind_port)
        )
    sock = socket.socket(fileno=fd) if fd is not None else None
    app = build_app(_load(service), settings, run_workers=not api_only)
    _serve_http(app, bind_host, bind_port, settings, sock)


@app.command()
def worker(service: ServiceArg, port: PortOpt = 9100, host: HostOpt = "127.0.0.1") -> None:
    """A service's relay and consumers without its API (health and metrics stay on `--port`)."""
    from keel.core.runtime import build_app

    settings = _settings_for_serving()
    setup_logging(settings.log_level)
    _serve_http(build_app(_load(service), settings, serve_routes=False), host, port, settings)


@app.command()
def openapi(
    service: ServiceArg,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="file to write (default: stdout)")
    ] = None,
) -> None:
    """Print (or write) a service's OpenAPI document as YAML, generated from the code."""
    from keel.core.openapi import render

    text = render(_load(service)[0])
    if output is None:
        typer.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)


@app.command()
def migrate(
    revision: Annotated[
        str, typer.Option(help="target revision: head, base or an id; below the current one migrates down")
    ] = "head",
) -> None:
    """Move the database up or down to a revision (embedded PostgreSQL when POSTGRES_DSN is unset).
    Run once per release, before the services start (they only check the database is current)."""
    from keel.core.infra import reach_postgres, resolve_dsn
    from keel.core.schema import migrate as move
    from keel.core.schema import resolve_revision

    settings = Settings()
    setup_logging(settings.log_level)
    resolve_revision(revision)  # an unknown revision is refused before anything starts

    async def run() -> tuple[str | None, str | None]:
        dsn = await resolve_dsn(settings)
        await reach_postgres(dsn, settings.db_connect_timeout_s)
        return await move(dsn, revision, pooler=settings.db_pooler)

    before, after = asyncio.run(run())
    if before == after:
        console.print(f"already at {after or 'base'}")
    else:
        console.print(f"migrated from {before or 'base'} to {after or 'base'}")


@app.command()
def demo(
    base_url: Annotated[str, typer.Option(help="the platform (`keel up`)")] = "http://127.0.0.1:8000",
    brokers: Annotated[
        str | None, typer.Option(help="host:port,... to publish route.confirmed and orders to")
    ] = None,
    tickets_url: Annotated[str | None, typer.Option(help="tickets, when served apart")] = None,
    orders_url: Annotated[str | None, typer.Option(help="orders, when served apart")] = None,
    videos_url: Annotated[str | None, typer.Option(help="videos, when served apart")] = None,
    orchestrator_url: Annotated[str | None, typer.Option(help="orchestrator, when served apart")] = None,
    delivery_url: Annotated[str | None, typer.Option(help="delivery-prefetch, when served apart")] = None,
    timeout: Annotated[float, typer.Option(help="seconds each flow may wait for the platform")] = 120.0,
    video_source_port: Annotated[
        int, typer.Option(help="127.0.0.1 port of the demo's own clip (for HLS_MODE=ffmpeg)")
    ] = 8765,
) -> None:
    """A short scenario through every service of a running platform; exits 1 if any flow failed.

    In HLS_MODE=ffmpeg the platform fetches sources: allow the demo's clip with
    VIDEO_FETCH_ALLOW_HOSTS=127.0.0.1:8765 (the port of --video-source-port)."""
    from keel.core.spans import command_trace
    from keel.core.telemetry import KEEP_ALL, make_sampler
    from keel.demo.console import run
    from keel.demo.steps import FlowResult
    from keel.demo.targets import Targets

    base = base_url.rstrip("/")
    targets = Targets(
        tickets=tickets_url or base,
        orders=orders_url or base,
        videos=videos_url or base,
        orchestrator=orchestrator_url or base,
        delivery=delivery_url or base,
        brokers=[b.strip() for b in (brokers or "").split(",") if b.strip()],
        # One base URL is `keel up`: its dev bus door publishes what would otherwise need a broker.
        platform=None if any((tickets_url, orders_url, videos_url, orchestrator_url, delivery_url)) else base,
        video_source_port=video_source_port,
    )
    settings = Settings()
    sampler = make_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg, default=KEEP_ALL)

    async def traced() -> list[FlowResult]:
        # One trace for the run: every request and event of the demo joins it.
        with command_trace("keel-demo", "demo", settings.otel_exporter_otlp_endpoint, sampler):
            return await run(targets, Console(), timeout)

    results = asyncio.run(traced())
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


app.add_typer(orders_app, name="orders")
app.add_typer(dlq_app, name="dlq")


if __name__ == "__main__":  # pragma: no cover
    app()
