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
import sys
import uuid
from collections.abc import Awaitable
from functools import partial
from typing import Any

import uvloop
from bench.tracing_cost import receiving
from bench.tracing_path import (
    access_log_to_nowhere,
    cpu_per_request,
    http_scope,
    in_process_app,
    in_turns,
    print_figures,
)
from bench.workloads.tickets import DESCRIPTION, TITLE

CALLERS = 32  # as the served row's connections
BODY = f'{{"title": "{TITLE}", "description": "{DESCRIPTION}"}}'.encode()


def create_scope(user: str) -> dict[str, Any]:
    """A keyed create as the bench's wrk script sends it, with a fresh Idempotency-Key."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"x-user-id", user.encode()),
        (b"idempotency-key", uuid.uuid4().hex.encode()),
    ]
    return http_scope("POST", "/v1/tickets", headers)


async def measure(creates: int, rounds: int, endpoint: str) -> dict[str, list[float]]:
    from keel.tickets.spec import SPEC

    async with in_process_app(SPEC) as (app, ctx):
        user = f"path-{ctx.run_id}"

        def round_cpu(requests: int) -> Awaitable[float]:
            scope = partial(create_scope, user)
            return cpu_per_request(app, scope, requests, body=BODY, status=201, callers=CALLERS)

        await round_cpu(1_000)  # warm-up: pools, code paths
        return await in_turns("tickets", endpoint, rounds, lambda: round_cpu(creates))


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
