"""Cache and rate-limit figures: hit latency per adapter, the price of stamped reads, and prefix
invalidation by generation against a SCAN, on a private redis-server (never the shared one's keyspace).

Run: .venv/bin/python -m bench.cache_bench [--keys 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from tests.support import servers

from keel.core.cache import MemoryCache, RedisCache, redis_client
from keel.core.ratelimit import RateLimiter, memory_storage, redis_storage


async def per_call_us(op: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(median, p99) microseconds per call of `op`, one call at a time."""
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await op()
        samples.append((time.perf_counter() - began) * 1e6)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


async def concurrent_hits(
    cache: MemoryCache | RedisCache,
    key: str,
    load: Callable[[], Awaitable[bytes]],
    *,
    callers: int,
    each: int,
) -> float:
    async def caller() -> None:
        for _ in range(each):
            await cache.get_or_load(key, load, 60)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return callers * each / (time.perf_counter() - began)


def errors(cache: MemoryCache | RedisCache) -> float:
    labels = {"cache": cache.name, "result": "error"}
    return REGISTRY.get_sample_value("cache_requests_total", labels) or 0.0


def line(what: str, figures: tuple[float, float], limit: str) -> None:
    print(f"  {what:<58} p50 {figures[0]:9.1f} µs   p99 {figures[1]:9.1f} µs   ({limit})")


async def hits(client: aioredis.Redis) -> None:
    print("get_or_load hit (one caller at a time):")

    async def load() -> bytes:
        return b"x" * 512

    memory = MemoryCache(max_entries=10_000, name="bench-memory")
    redis_cache = RedisCache(client, name="bench-redis", namespace="bench:")
    key = "tickets:list:user-1:all:20:0"
    for cache in (memory, redis_cache):
        await cache.get_or_load(key, load, ttl_s=60)
    line("MemoryCache", await per_call_us(lambda: memory.get_or_load(key, load, 60), 20_000), "limit 20 µs")
    line(
        "RedisCache (value + 6 generations in one script call)",
        await per_call_us(lambda: redis_cache.get_or_load(key, load, 60), 5_000),
        "limit 1 ms on loopback",
    )
    for label, cache in (("MemoryCache", memory), ("RedisCache", redis_cache)):
        errors_before = errors(cache)
        per_s = await concurrent_hits(cache, key, load, callers=100, each=50)
        degraded = errors(cache) - errors_before
        print(f"  {label + ', 100 concurrent callers':<58} {per_s:12,.0f} hits/s ({degraded:.0f} degraded)")
    await client.set("bench:plain", b"x" * 512)
    line("plain redis GET, for comparison", await per_call_us(lambda: client.get("bench:plain"), 5_000), "-")


async def invalidation(client: aioredis.Redis, keys: int) -> None:
    print(f"invalidating one user's pages among {keys:,} keys:")
    cache = RedisCache(client, name="bench-inval", namespace="inv:")
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"inv:v:tickets:list:user-{i % 5000}:all:20:{i}", b"p", ex=600)
        if i % 5000 == 4999:
            await pipe.execute()
    await pipe.execute()
    line(
        "delete_prefix (one generation bump)",
        await per_call_us(lambda: cache.delete_prefix("tickets:list:user-7:"), 2_000),
        "O(1), limit 1 ms",
    )

    async def scan_delete() -> None:
        found = [k async for k in client.scan_iter(match="inv:v:tickets:list:user-7:*", count=1000)]
        if found:
            await client.delete(*found)

    line("SCAN MATCH + DEL (the alternative)", await per_call_us(scan_delete, 20), "O(keyspace)")

    memory = MemoryCache(max_entries=keys, name="bench-mem-inval")
    for i in range(keys):
        await memory.set(f"tickets:list:user-{i % 5000}:all:20:{i}", b"p", ttl_s=600)
    line(
        "MemoryCache.delete_prefix",
        await per_call_us(lambda: memory.delete_prefix("tickets:list:user-7:"), 2_000),
        "O(1)",
    )

    async def memory_scan() -> None:
        for k in [k for k in memory._entries if k.startswith("tickets:list:user-7:")]:
            memory._entries.pop(k, None)

    line("scan of the in-process dict (the alternative)", await per_call_us(memory_scan, 20), "O(entries)")


async def limiter(url: str) -> None:
    print("rate-limit check (moving window, caller under the limit):")
    for label, storage in (
        ("memory", memory_storage()),
        ("redis", redis_storage(url, key_prefix="bench-rl")),
    ):
        lim = RateLimiter("1000000/second", storage, name=f"bench-{label}")
        line(f"{label} storage", await per_call_us(lambda lim=lim: lim.check("user:1"), 3_000), "-")


async def main(keys: int) -> None:
    with servers.running(servers.redis_server()) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        client = redis_client(url)
        try:
            await hits(client)
            await invalidation(client, keys)
            await limiter(url)
        finally:
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().keys))
