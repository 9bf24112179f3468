"""What a known cost per request becomes in a served row: the bare app (bench/bare_asgi.py, on the server
`keel serve` runs) answering a cached-GET-sized body, with a busy wait of 0, 5, 10 and 20 µs added to
each request, every variant running at once and measured in turns as the bench's comparisons are
(loadgen.measure_interleaved, wrk with 32 connections pinned to CPU 1).

On this 2-vCPU machine the server's CPU per request grows by 1.4-2 times the work added, and the rate
falls with it: wrk keeps 32 requests in flight, so a slower server answers fewer of them per turn of
its event loop and pays the loop's own costs over fewer requests. A feature's in-process cost (e.g.
`bench.tracing_cost`) is therefore not what a served row shows; this calibration converts one into
the other, and says how much in-process work a row's budget leaves (bench/results/changes.md).

Run: .venv/bin/python -m bench.served_cost
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
from pathlib import Path

from bench import loadgen
from bench.config import BenchConfig
from bench.limits import bare_asgi
from bench.loadgen import Target

WORK_NS = (0, 5_000, 10_000, 20_000)
BODY = b"x" * 837  # the cached order's size (the GET /order row)


async def main() -> None:
    cfg = BenchConfig()
    with tempfile.TemporaryDirectory(prefix="keel-served-cost-") as logdir:
        async with contextlib.AsyncExitStack() as stack:
            targets = []
            for work_ns in WORK_NS:
                child, _ = await stack.enter_async_context(
                    bare_asgi(BODY, 200, Path(logdir), work_ns=work_ns)
                )
                targets.append(Target(f"http://127.0.0.1:{child.port}", ["/", "bench"], child.pid))
            rounds = await loadgen.measure_interleaved(cfg, "get", targets)
    # (work added µs, req/s, µs CPU a request), medians over the rounds; the first row adds nothing.
    medians = [
        (
            work_ns / 1000,
            statistics.median(s.rate for s in samples),
            statistics.median(s.cpu_ms or 0.0 for s in samples) * 1000,
        )
        for work_ns, samples in zip(WORK_NS, rounds, strict=True)
    ]
    _, base_rate, base_cpu = medians[0]
    print(f"served by the bare app, {len(rounds[0])} rounds in turns (median): work added per request →")
    for work_us, rate, cpu in medians:
        grown = (
            f"+{cpu - base_cpu:.1f} µs ({(cpu - base_cpu) / work_us:.1f} times the work)" if work_us else ""
        )
        print(
            f"  {work_us:4.0f} µs: {rate:8,.0f} req/s ({rate / base_rate:4.0%}), {cpu:6.1f} µs CPU/req {grown}"
        )


if __name__ == "__main__":
    asyncio.run(main())
