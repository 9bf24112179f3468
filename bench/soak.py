"""`make soak`: `keel up` under the ticket create load for 10 minutes, with tracing on (every trace
kept, as `keel up` does, to a loopback OTLP receiver) and the access log on, RSS sampled with psutil; memory
may grow at most 10 % from its level after the warm-up (issue 7). Prints start/peak/end RSS and the
growth, and appends the result to bench/results/soak.md.

Run: .venv/bin/python -m bench.soak   (SOAK_DURATION_S / SOAK_WARMUP_S shorten it while developing)"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import loadgen
from bench.config import RESULTS, BenchConfig
from bench.procs import free_port, keel_bin, postgres_server, private_redis, scratch_database, service
from bench.run import git_sha
from bench.workloads import Context
from bench.workloads.memory import MIB, rss
from tests.support.otlp import OtlpReceiver

TARGET_GROWTH = 0.10  # the bound
DURATION_S = float(os.environ.get("SOAK_DURATION_S", 600))
# Pools, prepared statements, caches and the allocator's arenas fill during the first minute of load;
# the growth is measured from the level reached then.
WARMUP_S = float(os.environ.get("SOAK_WARMUP_S", 60))
SAMPLE_S = 1.0
# start and end are the median of this many seconds of samples, so one allocation burst does not
# decide the figure (the peak shows the bursts).
LEVEL_WINDOW_S = 10.0


@dataclass(frozen=True)
class Soak:
    start: int
    peak: int
    end: int
    rps: float
    requests: int
    errors: int
    # RSS once a minute of the measured part, for the shape of the curve.
    minutes: list[int]
    spans: int  # received by the loopback OTLP receiver

    @property
    def growth(self) -> float:
        return (self.end - self.start) / self.start


async def sample(pid: int, seconds: float) -> list[tuple[float, int]]:
    """(seconds since the start, RSS) about every SAMPLE_S."""
    samples: list[tuple[float, int]] = []
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        samples.append((elapsed, rss(pid)))
        await asyncio.sleep(SAMPLE_S)
    return samples


def level(samples: list[tuple[float, int]]) -> int:
    last = samples[-1][0]
    return int(statistics.median(r for t, r in samples if t >= last - LEVEL_WINDOW_S))


def per_minute(samples: list[tuple[float, int]]) -> list[int]:
    """The last sample of each whole minute."""
    by_minute: dict[int, int] = {}
    for t, r in samples:
        by_minute[int(t // 60)] = r
    return [r for minute, r in sorted(by_minute.items()) if (minute + 1) * 60 <= samples[-1][0] + SAMPLE_S]


async def soak(ctx: Context, port: int, sink: OtlpReceiver) -> Soak:
    """Traces exported (`keel up` keeps every one) and the access log on."""
    argv = [keel_bin(), "up", "--port", str(port)]
    env = {**ctx.service_env(), "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "ACCESS_LOG": "true"}
    async with service(argv, env, ctx.logdir, "keel-up-soak", port) as child:
        base = f"http://127.0.0.1:{port}"
        user = f"bench-soak-{ctx.run_id}"
        # One wrk run covers warm-up and measurement: no gap in the load where memory could be returned.
        load = asyncio.create_task(
            loadgen.wrk(ctx.cfg, base, "create_ticket", [uuid.uuid4().hex[:12], user], WARMUP_S + DURATION_S)
        )
        warm = await sample(child.pid, WARMUP_S)
        measured = await sample(child.pid, DURATION_S)
        result = await load
    return Soak(
        start=level(warm),
        peak=max(r for _, r in measured),
        end=level(measured),
        rps=result.rps,
        requests=round(result.rps * (WARMUP_S + DURATION_S)),
        errors=result.errors + result.non2xx,
        minutes=per_minute(measured),
        spans=sink.received,
    )


def report(result: Soak, started: datetime, command: str) -> str:
    met = "yes" if result.growth <= TARGET_GROWTH else "**no**"
    curve = ", ".join(f"{m / MIB:.0f}" for m in result.minutes)
    return (
        f"## {started:%Y-%m-%d %H:%M} UTC · `{git_sha()}` · {os.cpu_count()} cores\n\n"
        f"`{command}`: `keel up` (memory bus, private Redis, scratch database; tracing on, every trace "
        f"kept as `keel up` does, to a loopback OTLP receiver: {result.spans:,} spans received; access "
        "log on) under "
        "`wrk` POST /v1/tickets "
        f"for {WARMUP_S:g} s of warm-up + {DURATION_S:g} s measured; RSS (process + children) by psutil "
        f"every {SAMPLE_S:g} s; start/end = median of the last {LEVEL_WINDOW_S:g} s of warm-up / of the run.\n\n"
        "| start RSS | peak RSS | end RSS | growth | target | met? | load |\n"
        "| ---: | ---: | ---: | ---: | --- | --- | --- |\n"
        f"| {result.start / MIB:.1f} MiB | {result.peak / MIB:.1f} MiB | {result.end / MIB:.1f} MiB "
        f"| {result.growth:+.1%} | ≤ {TARGET_GROWTH:.0%} | {met} "
        f"| {result.rps:,.0f} req/s, ~{result.requests:,} tickets, {result.errors} errors |\n\n"
        f"RSS each minute (MiB): {curve}\n"
    )


async def main() -> int:
    cfg = BenchConfig()
    started = datetime.now(UTC)
    logdir = Path(tempfile.mkdtemp(prefix="keel-soak-"))
    with postgres_server(cfg.admin_dsn) as admin_dsn, private_redis() as redis_url:
        async with scratch_database(admin_dsn) as dsn:
            ctx = Context(cfg=cfg, dsn=dsn, redis_url=redis_url, brokers="", logdir=logdir)
            with OtlpReceiver(keep=False) as sink:
                result = await soak(ctx, free_port(), sink)
    command = "make soak" if DURATION_S == 600 and WARMUP_S == 60 else "python -m bench.soak"
    text = report(result, started, command) + f"\nServer log: `{logdir}`\n"
    print(text)
    path = RESULTS / "soak.md"
    if not path.exists():
        path.write_text("# `keel up` memory soak (make soak)\n\n")
    with open(path, "a", encoding="utf-8") as out:
        out.write(text + "\n")
    return 0 if result.growth <= TARGET_GROWTH else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
