"""`make bench-alternatives`: the maintained libraries that could replace a piece Keel wrote itself,
measured beside Keel's piece in one run; docs/design-decisions.md quotes the figures.

- HTTP server: granian embedded in Keel's loop (what `keel serve` runs, keel.core.http_server) against
  uvicorn and granian's own worker process, the bare ASGI app and Keel's hottest GET (an order from the
  cache) on each, one process, wrk as in `make bench`.
- Cache: cashews (the design's first choice) against keel.core.cache.RedisCache on one private Redis:
  a hit, and invalidating a prefix with 10,000 keys under it.
- Circuit breaker: aiobreaker and purgatory against keel.core.breaker around a call that succeeds.

The libraries are not dependencies: `make bench-alternatives` runs this with them added for the run
(`uv run --with ...`). Results: bench/results/alternatives.md."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from bench import loadgen
from bench.config import RESULTS, ROOT, BenchConfig
from bench.procs import free_port, postgres_server, private_redis, scratch_database, service
from bench.run import git_sha
from bench.workloads import Context
from bench.workloads.orders import stored_order

from keel.core.breaker import CircuitBreaker
from keel.core.cache.redis import RedisCache, redis_client

VENV_BIN = ROOT / ".venv" / "bin"
OPS = 20_000
KEYS_UNDER_PREFIX = 10_000


def _granian(target: str, port: int, *, factory: bool = False) -> list[str]:
    binary = shutil.which("granian", path=str(Path(sys.executable).parent)) or "granian"
    return [
        binary,
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-mode",
        "st",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
        *(["--factory"] if factory else []),
        target,
    ]


def _uvicorn(target: str, port: int, *, factory: bool = False) -> list[str]:
    """uvicorn as it serves best here: uvloop, httptools, one worker, no access log."""
    return [
        str(VENV_BIN / "uvicorn"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--loop", "uvloop", "--http", "httptools", "--workers", "1", "--no-access-log"),
        *("--log-level", "warning"),
        *(["--factory"] if factory else []),
        target,
    ]


async def http_rows(ctx: Context) -> list[str]:
    order = await stored_order(ctx, f"alt{ctx.run_id}")
    path = f"/order/{order['order_uid']}"
    body_file = ctx.logdir / "bare.json"
    keel_env = {**ctx.service_env(), "KEEL_BENCH_SERVICE": "orders", "PYTHONPATH": str(ROOT)}
    bare_env = {"BARE_BODY_FILE": str(body_file), "BARE_STATUS": "200", "PYTHONPATH": str(ROOT)}
    keel_on: dict[str, Callable[[int], list[str]]] = {
        "granian embedded (keel serve)": lambda port: [
            *(str(VENV_BIN / "keel"), "serve", "orders", "--api-only", "--port", str(port)),
        ],
        "granian's worker process": lambda port: _granian(
            "bench.service_app:service_app", port, factory=True
        ),
        "uvicorn": lambda port: _uvicorn("bench.service_app:service_app", port, factory=True),
    }
    bare_on: dict[str, Callable[[int], list[str]]] = {
        "granian embedded (keel serve)": lambda port: [sys.executable, "-m", "bench.bare_asgi", str(port)],
        "granian's worker process": lambda port: _granian("bench.bare_asgi:app", port),
        "uvicorn": lambda port: _uvicorn("bench.bare_asgi:app", port),
    }
    rows = []
    for title, argv, env, health in [
        *(
            (f"Keel, GET /order/{{id}} from cache, on {k}", v, keel_env, "/healthz")
            for k, v in keel_on.items()
        ),
        *((f"bare ASGI app, the same body, on {k}", v, bare_env, "/") for k, v in bare_on.items()),
    ]:
        port = free_port()
        async with service(argv(port), env, ctx.logdir, f"alt-{port}", port, health=health) as child:
            base = f"http://127.0.0.1:{port}"
            if not body_file.exists():
                async with httpx.AsyncClient(base_url=base) as client:
                    body_file.write_bytes((await client.get(path)).raise_for_status().content)
            samples, _ = await loadgen.measure(ctx.cfg, base, "get", [path, "bench"], server_pid=child.pid)
        best = sorted(samples, key=lambda s: s.rate)[len(samples) // 2]
        cpu = f"{best.cpu_ms * 1000:.0f} µs" if best.cpu_ms is not None else "—"
        rows.append(f"| {title} | {best.rate:,.0f} req/s | {best.p99_ms or 0:.1f} ms | {cpu} |")
    return rows


async def _per_op_us(op: Callable[[], Awaitable[object]], n: int = OPS) -> float:
    """µs per call, sequential (one caller: the cost of the code path, not of concurrency)."""
    for _ in range(min(n // 10, 1000)):
        await op()
    started = time.perf_counter()
    for _ in range(n):
        await op()
    return (time.perf_counter() - started) / n * 1e6


async def cache_rows(redis_url: str) -> list[str]:
    from cashews import Cache

    ns = f"alt-{uuid.uuid4().hex[:6]}"
    ours = RedisCache(redis_client(redis_url), name=ns)
    theirs = Cache()
    theirs.setup(redis_url)
    value = b"x" * 837  # the bench's order body size

    async def load() -> bytes:
        return value

    await ours.get_or_load("orders:hit", load, 600)
    await theirs.set(f"{ns}:orders:hit", value, expire=600)
    hit_ours = await _per_op_us(lambda: ours.get_or_load("orders:hit", load, 600))
    hit_theirs = await _per_op_us(lambda: theirs.get(f"{ns}:orders:hit"))

    async def fill(set_one: Callable[[str], Awaitable[object]]) -> None:
        for start in range(0, KEYS_UNDER_PREFIX, 100):
            await asyncio.gather(*(set_one(f"user:42:page:{i}") for i in range(start, start + 100)))

    await fill(lambda k: ours.set(k, value, 600))
    await fill(lambda k: theirs.set(f"{ns}:{k}", value, expire=600))
    started = time.perf_counter()
    await ours.delete_prefix("user:42:")
    prefix_ours = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    await theirs.delete_match(f"{ns}:user:42:*")
    prefix_theirs = (time.perf_counter() - started) * 1000
    gone_ours = await ours.get("user:42:page:7") is None
    gone_theirs = await theirs.get(f"{ns}:user:42:page:7") is None
    await theirs.close()
    return [
        f"| hit of an 837 B value, one caller | {hit_ours:.0f} µs/op | {hit_theirs:.0f} µs/op |",
        f"| invalidate a prefix with {KEYS_UNDER_PREFIX:,} keys under it | {prefix_ours:.1f} ms "
        f"(gone: {gone_ours}) | {prefix_theirs:.1f} ms, `delete_match` (gone: {gone_theirs}) |",
    ]


async def breaker_rows() -> list[str]:
    import aiobreaker
    import purgatory

    async def succeed() -> int:
        return 1

    ours = CircuitBreaker("bench")

    async def through_ours() -> int:
        if not ours.allow():
            raise RuntimeError("open")
        result = await succeed()
        ours.record_success()
        return result

    aio = aiobreaker.CircuitBreaker(fail_max=3, timeout_duration=timedelta(seconds=3))
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=3, default_ttl=3)

    async def through_purgatory() -> int:
        async with await factory.get_breaker("bench"):
            return await succeed()

    bare = await _per_op_us(succeed)
    return [
        f"| a call that succeeds (bare call: {bare:.2f} µs) | {await _per_op_us(through_ours):.2f} µs/op "
        f"| aiobreaker {await _per_op_us(lambda: aio.call_async(succeed)):.2f} µs/op; "
        f"purgatory {await _per_op_us(through_purgatory):.2f} µs/op |",
    ]


async def main() -> None:
    cfg = BenchConfig()
    started = datetime.now(UTC)
    logdir = Path(tempfile.mkdtemp(prefix="keel-bench-alt-"))
    with postgres_server(None) as admin_dsn, private_redis() as redis_url:
        async with scratch_database(admin_dsn) as dsn:
            ctx = Context(cfg, dsn, redis_url, "", logdir)
            http = await http_rows(ctx)
        cache = await cache_rows(redis_url)
        breaker = await breaker_rows()
    versions = _versions("granian", "uvicorn", "cashews", "aiobreaker", "purgatory")
    text = "\n".join(
        [
            "# Keel's own pieces beside the libraries that could replace them",
            "",
            f"## {started:%Y-%m-%d %H:%M} UTC · `{git_sha()}` · {os.cpu_count()} cores · {versions}",
            "",
            f"Load average when it ended: {os.getloadavg()[0]:.1f} (other work on the machine makes the "
            "rates move; the ratios and the CPU per request move less).",
            "",
            "`make bench-alternatives` (bench/alternatives.py). HTTP: wrk as in `make bench` (median of "
            f"{cfg.runs} runs of {cfg.duration_s:g} s, {cfg.connections} connections, wrk pinned to CPU "
            f"{cfg.loadgen_cpu}), one server process. Cache and breaker: one caller, {OPS:,} calls.",
            "",
            "| HTTP, one process | req/s | p99 | server CPU/req |",
            "| --- | ---: | ---: | ---: |",
            *http,
            "",
            "| cache on one Redis | keel.core.cache.RedisCache | cashews |",
            "| --- | --- | --- |",
            *cache,
            "",
            "| circuit breaker | keel.core.breaker | libraries |",
            "| --- | --- | --- |",
            *breaker,
            "",
        ]
    )
    (RESULTS / "alternatives.md").write_text(text)
    print(text)


def _versions(*names: str) -> str:
    from importlib.metadata import version

    return ", ".join(f"{n} {version(n)}" for n in names)


if __name__ == "__main__":
    asyncio.run(main())
