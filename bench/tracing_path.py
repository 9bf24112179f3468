"""What tracing costs a cached GET's whole path through the app, in process: the order service built as
`keel serve orders` builds it (edge, fast route, cache in Redis, access log on), called straight
through ASGI with no server and no socket, with tracing off, at the default sampling (parent-based
10 %, spans exported to a receiver in another process) and with nothing sampled — one round of each
in turn, CPU per request by `time.process_time`.

Served, a row moved by up to 5x between rounds on this machine (bench/README.md); in process the
same comparison moves far less. Left out is the server's own share of a served request (granian
parses and writes in Rust), which tracing does not add to: the ratio here weighs tracing against the
app's own path only.

Run: .venv/bin/python -m bench.tracing_path [--requests 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.procs import postgres_server, private_redis, scratch_database
from bench.tracing_cost import receiving
from bench.workloads import Context
from bench.workloads.orders import stored_order

from keel.core import telemetry
from keel.core.logging import setup_logging
from keel.core.telemetry import SamplerName

# (name, OTEL_TRACES_SAMPLER and its argument) per configuration; None: tracing off.
CONFIGS: tuple[tuple[str, tuple[SamplerName, float | None] | None], ...] = (
    ("off", None),
    ("default 10 %", ("parentbased_traceidratio", 0.1)),
    ("nothing sampled", ("parentbased_always_off", None)),
)


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI HTTP scope as the server builds it; a fresh one per request (the edge writes `state`)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def scope_for(path: str) -> Callable[[], dict[str, Any]]:
    """A GET of `path` as wrk sends it."""
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"x-user-id", b"bench")]
    return lambda: http_scope("GET", path, headers)


async def cpu_per_request(
    app: Any,
    scope: Callable[[], dict[str, Any]],
    requests: int,
    *,
    body: bytes = b"",
    status: int = 200,
    callers: int = 1,
) -> float:
    """CPU µs per request of `requests` sent by `callers` concurrent callers, each answered `status`."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    left = iter(range(requests))

    async def caller() -> None:
        for _ in left:
            await app(scope(), receive, send)

    began = time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    spent = time.process_time() - began
    if set(statuses) != {status}:
        raise RuntimeError(f"statuses {sorted(set(statuses))}, not all {status}")
    return spent / requests * 1e6


@contextlib.asynccontextmanager
async def in_process_app(spec: Any) -> AsyncIterator[tuple[Any, Context]]:
    """`spec`'s app as `keel serve NAME --api-only` builds it, started, on a private PostgreSQL and
    Redis: called straight through ASGI, no server and no socket."""
    from keel.core.runtime import build_app
    from keel.core.settings import Settings

    cfg = BenchConfig()
    with postgres_server(cfg.admin_dsn) as admin, private_redis() as redis_url:
        async with scratch_database(admin) as dsn:
            ctx = Context(cfg=cfg, dsn=dsn, redis_url=redis_url, brokers="", logdir=Path("."))
            os.environ.update(ctx.service_env())
            app = build_app([spec], Settings(), run_workers=False)
            async with app.router.lifespan_context(app):
                yield app, ctx


async def measure(requests: int, rounds: int, endpoint: str) -> dict[str, list[float]]:
    from keel.orders.spec import SPEC

    async with in_process_app(SPEC) as (app, ctx):
        order = await stored_order(ctx, f"path{uuid.uuid4().hex[:8]}")
        scope = scope_for(f"/order/{order['order_uid']}")
        await cpu_per_request(app, scope, requests)  # warm-up: the cache, the code paths
        return await in_turns("orders", endpoint, rounds, lambda: cpu_per_request(app, scope, requests))


async def in_turns(
    service: str, endpoint: str, rounds: int, round_cpu: Callable[[], Awaitable[float]]
) -> dict[str, list[float]]:
    """`rounds` of `round_cpu` under each configuration in turn: {configuration: figure per round}."""
    figures: dict[str, list[float]] = {name: [] for name, _ in CONFIGS}
    for _ in range(rounds):
        for name, sampler in CONFIGS:
            if sampler is not None:
                telemetry.setup_tracing(
                    service, endpoint, sampler=telemetry.make_sampler(*sampler), client_spans=True
                )
            try:
                figures[name].append(await round_cpu())
            finally:
                telemetry.shutdown_tracing()
    return figures


def access_log_to_nowhere() -> None:
    """The access line as `keel serve` writes it, to nowhere."""
    setup_logging("INFO", json=True)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open for the process's life)
    for logger in (logging.getLogger(), logging.getLogger("keel.access")):
        logger.handlers[0].setStream(devnull)  # type: ignore[attr-defined]


def print_figures(title: str, figures: dict[str, list[float]], decimals: int) -> None:
    off = figures["off"]
    print(title)
    for name, values in figures.items():
        ratios = sorted(o / v for o, v in zip(off, values, strict=True))
        print(
            f"  {name:<16} median {statistics.median(values):6.{decimals}f} µs"
            f"  rounds {', '.join(f'{v:.{decimals}f}' for v in values)}"
            f"  throughput vs off per round {', '.join(f'{r:.0%}' for r in ratios)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    access_log_to_nowhere()
    with receiving() as endpoint:
        figures = asyncio.run(measure(args.requests, args.rounds, endpoint))
    title = f"GET /order/{{id}} from cache, in process: CPU per request ({args.requests:,} requests a round)"
    print_figures(title, figures, decimals=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
