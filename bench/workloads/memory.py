"""Peak RSS of `keel up` (every service in one process) idle, and under the ticket create load."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import psutil
from bench import loadgen
from bench.procs import free_port, keel_bin, service
from bench.report import Row
from bench.workloads import Context

# Sampling period of the RSS probe: fine enough to catch a peak between two allocations bursts.
SAMPLE_S = 0.1
# How long `keel up` sits idle (after it answers /healthz) before the idle figure is taken.
IDLE_S = 3.0
MIB = 1024 * 1024
T = TypeVar("T")


def rss(pid: int) -> int:
    """The process and its children (the embedded pieces a future service may fork)."""
    proc = psutil.Process(pid)
    total = int(proc.memory_info().rss)
    for child in proc.children(recursive=True):
        try:
            total += int(child.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return total


async def peak_rss(pid: int, seconds: float) -> int:
    peak = 0
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        peak = max(peak, rss(pid))
        await asyncio.sleep(SAMPLE_S)
    return peak


async def peak_while(pids: Sequence[int], work: Awaitable[T]) -> tuple[T, dict[int, int]]:
    """`work`'s result and the peak RSS of each of `pids` while it ran."""
    task = asyncio.ensure_future(work)
    peaks = {pid: rss(pid) for pid in pids}
    while not task.done():
        for pid in pids:
            peaks[pid] = max(peaks[pid], rss(pid))
        await asyncio.wait({task}, timeout=SAMPLE_S)
    return task.result(), peaks


class MemoryWorkload:
    name = "memory"

    async def run(self, ctx: Context) -> Sequence[Row]:
        port = free_port()
        argv = [keel_bin(), "up", "--port", str(port)]
        async with service(argv, ctx.service_env(), ctx.logdir, "keel-up", port) as child:
            idle = await peak_rss(child.pid, IDLE_S)
            base = f"http://127.0.0.1:{port}"
            user = f"bench-mem-{ctx.run_id}"
            load = asyncio.create_task(
                loadgen.wrk(ctx.cfg, base, "create_ticket", [uuid.uuid4().hex[:12], user], ctx.cfg.duration_s)
            )
            loaded = await peak_rss(child.pid, ctx.cfg.duration_s)
            result = await load
        text = f"idle {idle / MIB:.0f} MiB; peak {loaded / MIB:.0f} MiB under create load ({result.rps:,.0f} req/s)"
        return [
            Row(
                "peak RSS of `keel up` (all services, one process)",
                None,
                None,
                "",
                None,
                text=text,
                note=f"POSTGRES_DSN=<scratch-db> REDIS_URL=<private> TICKETS_RATE_LIMIT='' keel up; psutil every {SAMPLE_S}s; "
                "10-minute soak: `make soak` → bench/results/soak.md",
            )
        ]
