"""What only the shared Redis cache promises: replicas see one another's values and invalidations,
and replicas missing one key together load it once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from keel.core.cache import RedisCache, redis_client
from tests.support.eventually import eventually


@pytest_asyncio.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    """Two clients, as two replicas (processes) of a service would have."""
    # Generous timeouts: a loaded machine must not degrade these calls (outages are tested elsewhere).
    a, b = redis_client(redis_url, timeout_s=2.0), redis_client(redis_url, timeout_s=2.0)
    yield a, b
    await a.aclose()
    await b.aclose()


def replicas(
    clients: tuple[aioredis.Redis, aioredis.Redis], key_prefix: str
) -> tuple[RedisCache, RedisCache]:
    run = uuid.uuid4().hex[:8]
    return (
        RedisCache(clients[0], name=f"replica-a-{run}", namespace=key_prefix),
        RedisCache(clients[1], name=f"replica-b-{run}", namespace=key_prefix),
    )


def misses(cache: RedisCache) -> float:
    return REGISTRY.get_sample_value("cache_requests_total", {"cache": cache.name, "result": "miss"}) or 0.0


async def test_a_value_stored_by_one_replica_is_served_by_another(clients, key_prefix):
    a, b = replicas(clients, key_prefix)
    await a.set("videos:1", b"meta", ttl_s=30)
    assert await b.get("videos:1") == b"meta"


async def test_an_invalidation_by_one_replica_hides_the_key_from_another(clients, key_prefix):
    a, b = replicas(clients, key_prefix)
    await a.set("tickets:list:u1:all:20:0", b"page", ttl_s=30)
    await b.delete_prefix("tickets:list:u1:")
    assert await a.get("tickets:list:u1:all:20:0") is None


async def test_replicas_missing_one_key_together_load_it_once(clients, key_prefix):
    a, b = replicas(clients, key_prefix)
    calls = 0
    gate = asyncio.Event()

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b"expensive"

    callers = [
        asyncio.create_task(cache.get_or_load("videos:hot", load, ttl_s=30))
        for cache in (a, b)
        for _ in range(20)
    ]
    # Every caller of both replicas has missed and one replica is loading: without the Redis lock the
    # other replica's flight would load too.
    await eventually(
        lambda: (misses(a), misses(b), calls), until=lambda s: s == (20, 20, 1), what="all missed"
    )
    gate.set()
    assert await asyncio.gather(*callers) == [b"expensive"] * 40
    assert calls == 1


async def test_the_stampede_lock_is_released_once_the_value_is_stored(clients, key_prefix):
    a, _ = replicas(clients, key_prefix)

    async def load() -> bytes:
        return b"v"

    await a.get_or_load("videos:2", load, ttl_s=30)
    assert await clients[0].exists(f"{key_prefix}l:videos:2") == 0


async def test_a_failed_load_releases_the_stampede_lock_for_the_next_caller(clients, key_prefix):
    a, b = replicas(clients, key_prefix)

    async def broken() -> bytes:
        raise RuntimeError("source down")

    async def working() -> bytes:
        return b"v"

    with pytest.raises(RuntimeError, match="source down"):
        await a.get_or_load("videos:3", broken, ttl_s=30)
    assert await clients[0].exists(f"{key_prefix}l:videos:3") == 0
    assert await b.get_or_load("videos:3", working, ttl_s=30) == b"v"
