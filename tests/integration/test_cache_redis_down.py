"""A Redis outage degrades the cache to the source of truth: no exception, bounded latency, and
caching (with the invalidations missed meanwhile) resumes when Redis is back."""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from keel.core.breaker import CircuitBreaker
from keel.core.cache import RedisCache, redis_client
from tests.support import servers
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def private_redis() -> Iterator[servers.ChildServer]:
    """A redis-server of this test's own: stopping the shared one would break everyone else's tests."""
    with servers.running(servers.redis_server()) as server:
        yield server


@pytest_asyncio.fixture
async def proxy(private_redis: servers.ChildServer) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(private_redis.port).start()
    yield proxy
    await proxy.close()


class Source:
    """The source of truth: counts how often the cache had to fall back to it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return b"from-source"


def errors(cache: RedisCache) -> float:
    return REGISTRY.get_sample_value("cache_requests_total", {"cache": cache.name, "result": "error"}) or 0.0


def build(client: aioredis.Redis, *, reset_after_s: float = 0.2, threshold: int = 3) -> RedisCache:
    name = f"down-{uuid.uuid4().hex[:8]}"
    breaker = CircuitBreaker(name, failure_threshold=threshold, reset_after_s=reset_after_s)
    return RedisCache(client, name=name, breaker=breaker)


def observer_of(cache: RedisCache, client: aioredis.Redis) -> RedisCache:
    """Another replica's view of `cache`'s entries, through `client`."""
    return RedisCache(client, name=f"observer-{uuid.uuid4().hex[:6]}", namespace=f"keel:cache:{cache.name}:")


async def latencies_ms(cache: RedisCache, source: Source, calls: int) -> list[float]:
    out = []
    for i in range(calls):
        began = time.perf_counter()
        assert await cache.get_or_load(f"videos:{i}", source, ttl_s=30) == b"from-source"
        out.append((time.perf_counter() - began) * 1000)
    return out


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:.3f} ms, p99 {q[98]:.3f} ms, max {max(values):.1f} ms over {len(values)} calls"


async def test_get_or_load_serves_the_source_while_redis_is_stopped_and_caches_again_after_restart(
    private_redis: servers.ChildServer,
) -> None:
    client = redis_client(f"redis://127.0.0.1:{private_redis.port}/0", timeout_s=0.2)
    cache, source = build(client), Source()
    try:
        assert await cache.get_or_load("videos:1", source, ttl_s=30) == b"from-source"
        assert await cache.get_or_load("videos:1", source, ttl_s=30) == b"from-source"
        assert source.calls == 1

        private_redis.stop()
        for _ in range(20):
            assert await cache.get_or_load("videos:1", source, ttl_s=30) == b"from-source"
        assert source.calls == 21
        assert await cache.get("videos:1") is None
        await cache.set("videos:2", b"x", ttl_s=30)
        await cache.delete("videos:2")
        await cache.delete_prefix("videos:")
        assert errors(cache) >= 20
        assert cache.circuit_open

        private_redis.start()

        async def cached_again() -> bool:
            await cache.get_or_load("videos:3", source, ttl_s=30)
            return await cache.get("videos:3") == b"from-source"

        await eventually(cached_again, until=bool, what="caching resumed after restart")
        assert not cache.circuit_open
        calls = source.calls
        assert await cache.get_or_load("videos:3", source, ttl_s=30) == b"from-source"
        assert source.calls == calls
    finally:
        await client.aclose()


async def test_open_breaker_keeps_calls_fast_while_redis_does_not_answer(proxy: TcpProxy) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    guarded_client, unguarded_client = redis_client(url, timeout_s=0.1), redis_client(url, timeout_s=0.1)
    guarded = build(guarded_client, reset_after_s=5.0)
    unguarded = build(unguarded_client, threshold=1_000_000)  # a breaker that never opens
    try:
        assert await guarded.get_or_load("videos:warm", Source(), ttl_s=30) == b"from-source"
        assert await unguarded.get_or_load("videos:warm", Source(), ttl_s=30) == b"from-source"
        proxy.set_mode("blackhole")

        with_breaker = await latencies_ms(guarded, Source(), 300)
        without_breaker = await latencies_ms(unguarded, Source(), 10)
        print(
            f"\nRedis not answering (socket timeout 100 ms), get_or_load per call:"
            f"\n  with breaker:    {summary(with_breaker)}"
            f"\n  without breaker: {summary(without_breaker)}"
        )

        # Only the calls before the breaker opens wait for the timeout; the rest answer from the source.
        assert sum(1 for ms in with_breaker if ms >= 95) <= 3
        assert statistics.median(with_breaker) < 1.0
        assert statistics.median(without_breaker) >= 90
    finally:
        await guarded_client.aclose()
        await unguarded_client.aclose()


async def test_invalidation_missed_during_an_outage_is_replayed_when_redis_returns(
    proxy: TcpProxy, private_redis: servers.ChildServer
) -> None:
    # The server keeps its data (a partition, not a crash): the stale page is still in Redis.
    client = redis_client(f"redis://127.0.0.1:{proxy.port}/0", timeout_s=0.2)
    direct = redis_client(f"redis://127.0.0.1:{private_redis.port}/0")
    cache = build(client, reset_after_s=0.05)
    observer = observer_of(cache, direct)
    try:
        await cache.set("tickets:list:u1:all:20:0", b"old page", ttl_s=60)
        proxy.set_mode("refuse")
        await cache.delete_prefix("tickets:list:u1:")  # the write committed; its invalidation cannot land
        assert await observer.get("tickets:list:u1:all:20:0") == b"old page"

        proxy.set_mode("pass")
        await eventually(
            lambda: cache.get("tickets:other"), until=lambda _: not cache.circuit_open, what="breaker closed"
        )
        await eventually(lambda: errors(observer), until=lambda n: n == 0, what="observer reachable")
        assert await observer.get("tickets:list:u1:all:20:0") is None
    finally:
        await client.aclose()
        await direct.aclose()


async def test_an_invalidation_a_primary_refuses_for_want_of_replicas_is_sent_again_once_it_accepts(
    private_redis: servers.ChildServer,
) -> None:
    """docs/production.md's advice for Sentinel: with `min-replicas-to-write 1` a primary cut off
    from its replica refuses writes (NOREPLICAS) rather than accepting ones its resync would drop.
    The refused invalidation is kept and sent once the primary accepts writes again."""
    client = redis_client(f"redis://127.0.0.1:{private_redis.port}/0")
    cache = build(client, reset_after_s=0.05)
    observer = observer_of(cache, client)
    try:
        await cache.set("tickets:list:u1:all:20:0", b"old page", ttl_s=60)
        await client.config_set("min-replicas-to-write", 1)  # no replica connected: writes refused
        await cache.delete_prefix("tickets:list:u1:")  # the write committed; its invalidation is refused
        assert errors(cache) == 1
        assert await observer.get("tickets:list:u1:all:20:0") == b"old page"

        await client.config_set("min-replicas-to-write", 0)  # the replica is back
        await eventually(
            lambda: cache.get("tickets:other"), until=lambda _: not cache.circuit_open, what="breaker closed"
        )
        assert await observer.get("tickets:list:u1:all:20:0") is None
    finally:
        await client.config_set("min-replicas-to-write", 0)
        await client.aclose()


async def test_an_outage_is_logged_a_few_times_not_once_per_call(
    private_redis: servers.ChildServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_client(f"redis://127.0.0.1:{private_redis.port}/0", timeout_s=0.2)
    cache = build(client, reset_after_s=60)
    private_redis.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="keel"):
            for i in range(200):
                await cache.get_or_load(f"videos:{i}", Source(), ttl_s=30)
        assert errors(cache) == 200  # one failed or refused read per call; the degraded load writes nothing
        assert 1 <= len([r for r in caplog.records if r.name.startswith("keel")]) <= 3
    finally:
        await client.aclose()


async def test_ping_fails_while_redis_is_down_and_passes_once_it_is_back(
    private_redis: servers.ChildServer,
) -> None:
    client = redis_client(f"redis://127.0.0.1:{private_redis.port}/0", timeout_s=0.2)
    cache = build(client)
    try:
        await cache.ping()
        private_redis.stop()
        with pytest.raises((OSError, aioredis.RedisError)):
            await cache.ping()
        private_redis.start()
        await cache.ping()
    finally:
        await client.aclose()
