"""`make bench`: every workload and its limit in one run on this machine; prints the Markdown table,
writes bench/results/latest.md and appends it to bench/results/history.md (date and git sha).

Run: .venv/bin/python -m bench.run   (BENCH_ONLY=tickets-create,outbox-relay to run a subset)"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop
from bench.config import RESULTS, ROOT, BenchConfig
from bench.procs import postgres_server, private_broker, private_redis, scratch_database
from bench.report import Row, markdown
from bench.workloads import PLANNED, Context, all_workloads, last_soak
from tests.support import servers

from keel.core import heap


def git_sha() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "bench", ":!bench/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def header(cfg: BenchConfig, started: datetime, elapsed_s: float) -> str:
    return (
        f"## {started:%Y-%m-%d %H:%M} UTC · `{git_sha()}` · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · {elapsed_s / 60:.1f} min\n\n"
        f"Median of {cfg.runs} runs of {cfg.duration_s:g} s after {cfg.warmup_s:g} s of warm-up; "
        f"{cfg.connections} connections; load generators (wrk, pgbench) pinned to CPU {cfg.loadgen_cpu} "
        "with taskset, the servers free to use every core. Figures and limits come from this run only. "
        f"Broker: {servers.broker_kind()} (single node), idempotent producer "
        f"{'on' if servers.idempotent_producers() else 'off'}."
    )


async def settle_outbox(dsn: str) -> None:
    """Delete what earlier workloads left unpublished (pgbench's limit runs write ~100k outbox rows):
    the next server's relay and consumers would otherwise work through it while measured."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox_events")
    finally:
        await conn.close()


async def run_all(cfg: BenchConfig, logdir: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    with (
        postgres_server(cfg.admin_dsn) as admin_dsn,
        private_redis() as redis_url,
        private_broker() as brokers,
    ):
        async with scratch_database(admin_dsn) as dsn:
            ctx = Context(
                cfg=cfg,
                dsn=dsn,
                redis_url=redis_url,
                brokers=brokers,
                logdir=logdir,
                idempotence=servers.idempotent_producers(),
            )
            for workload in all_workloads():
                if cfg.only and workload.name not in cfg.only:
                    continue
                began = time.monotonic()
                print(f"… {workload.name}", file=sys.stderr, flush=True)
                try:
                    await settle_outbox(dsn)
                    rows.extend(await workload.run(ctx))
                except Exception as exc:  # one broken workload must not hide the others' figures
                    traceback.print_exc()
                    rows.append(
                        Row(
                            workload.name,
                            None,
                            None,
                            "",
                            None,
                            text=f"failed: {exc!r}"[:300],
                            met_override=False,
                        )
                    )
                print(f"  {workload.name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
            notes.extend(ctx.notes)
    return rows, notes


def main() -> None:
    cfg = BenchConfig()
    started = datetime.now(UTC)
    began = time.monotonic()
    logdir = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    # On uvloop and with the collector set, as `keel serve` and `keel worker` run: the relay and the
    # consumer run in this process, and so do their limits (the raw producer and consumer, the driver
    # loops).
    heap.settle()
    rows, notes = uvloop.run(run_all(cfg, logdir))
    if not cfg.only:
        rows.extend([*PLANNED, last_soak(RESULTS / "soak.md")])
    text = markdown(rows, header(cfg, started, time.monotonic() - began))
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    text += f"\nServer logs of this run: `{logdir}`\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text("# Keel bench: latest run\n\n" + text)
    with open(RESULTS / "history.md", "a", encoding="utf-8") as history:
        history.write(text + "\n")


if __name__ == "__main__":
    main()
