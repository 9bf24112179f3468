"""What a ticket create costs the API process in process: the tickets app built as `keel serve tickets
--api-only` builds it (edge, fast routes, group commit, Redis), called straight through ASGI by 32
concurrent callers with fresh Idempotency-Keys, no server and no socket; CPU per create by
`time.process_time`, per round, with tracing off, at the default sampling (parent-based 10 %, spans
exported to a receiver in another process) and with nothing sampled, in turns.

Served, the create row moves by 2x with the VM's phase (bench/README.md); in process the figure moves
far less, so a change to the create path is weighed here first. Left out: the server's share of a
served request (granian reads and writes in Rust; the bare app's POST costs it about 60 µs), the
worker's relay and consumer, and PostgreSQL's and Redis's own CPU.

Run: .venv/bin/python -m bench.create_path [--creates 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop
from bench.config import BenchConfig
from bench.procs import postgres_server, private_redis, scratch_database
from bench.tracing_cost import receiving
from bench.tracing_path import access_log_to_nowhere, in_turns, print_figures
from bench.workloads import Context
from bench.workloads.tickets import DESCRIPTION, TITLE

CALLERS = 32  # as the served row's connections
BODY = f'{{"title": "{TITLE}", "description": "{DESCRIPTION}"}}'.encode()


def scope_for(user: str) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"x-user-id", user.encode()),
        (b"idempotency-key", uuid.uuid4().hex.encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/tickets",
        "raw_path": b"/v1/tickets",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def cpu_per_create(app: Any, user: str, creates: int) -> float:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    left = iter(range(creates))

    async def caller() -> None:
        for _ in left:
            await app(scope_for(user), receive, send)

    began = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    spent = time.process_time() - began
    if set(statuses) != {201}:
        raise RuntimeError(f"statuses {sorted(set(statuses))}: the creates were not all answered 201")
    return spent / creates * 1e6


async def measure(creates: int, rounds: int, endpoint: str) -> dict[str, list[float]]:
    from keel.core.runtime import build_app
    from keel.core.settings import Settings
    from keel.tickets.spec import SPEC

    cfg = BenchConfig()
    with postgres_server(cfg.admin_dsn) as admin, private_redis() as redis_url:
        async with scratch_database(admin) as dsn:
            ctx = Context(cfg=cfg, dsn=dsn, redis_url=redis_url, brokers="", logdir=Path("."))
            os.environ.update(ctx.service_env())
            app = build_app([SPEC], Settings(), run_workers=False)
            user = f"path-{ctx.run_id}"
            async with app.router.lifespan_context(app):
                await cpu_per_create(app, user, 1_000)  # warm-up: pools, code paths
                return await in_turns("tickets", endpoint, rounds, lambda: cpu_per_create(app, user, creates))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    access_log_to_nowhere()
    with receiving() as endpoint:
        figures = uvloop.run(measure(args.creates, args.rounds, endpoint))
    title = f"POST /v1/tickets with Idempotency-Key, in process, {CALLERS} callers: CPU per create"
    print_figures(title, figures, decimals=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
