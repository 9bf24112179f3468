"""One contract for both cache adapters: what services may rely on, whichever is wired in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from keel.core.cache import Cache, MemoryCache, RedisCache, redis_client
from tests.support.eventually import eventually


@pytest_asyncio.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Cache]:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        yield MemoryCache(max_entries=1000, name=name)
        return
    # A generous timeout: these tests are about behaviour, and a loaded CI machine must not turn a
    # slow connect into a (correctly) degraded call. Outages have their own tests.
    client = redis_client(request.getfixturevalue("redis_url"), timeout_s=2.0)
    # Connected before use, as the platform does at start (keel.core.infra.reach_redis): a Cluster
    # client learns the slot map then, not under the first burst of concurrent commands.
    await client.ping()
    if request.node.get_closest_marker("warm_pool"):
        await _open_connections(client, 100)
    yield RedisCache(client, name=name, namespace=key_prefix)
    await client.aclose()


async def _open_connections(client: Any, count: int) -> None:
    """`count` pooled connections opened one after another: a test of `count` concurrent callers is
    about what they share, and on a loaded CI machine `count` connects at once ran past the connect
    timeout (the calls then, correctly, degraded). A Cluster client keeps a pool per node, opened as
    before."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return
    held = [await pool.get_connection() for _ in range(count)]
    for connection in held:
        await pool.release(connection)


def counted(cache: Cache, result: str) -> float:
    return REGISTRY.get_sample_value("cache_requests_total", {"cache": cache.name, "result": result}) or 0.0


class Loads:
    """A loader that counts its calls and can be held at a gate until the test lets it finish."""

    def __init__(self, value: bytes = b"loaded", *, gated: bool = False) -> None:
        self.value = value
        self.calls = 0
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        await self.gate.wait()
        return self.value


async def test_get_returns_what_set_stored(cache: Cache) -> None:
    await cache.set("orders:1", b"\x00binary\npayload", ttl_s=30)
    assert await cache.get("orders:1") == b"\x00binary\npayload"


async def test_get_of_a_key_never_set_is_none(cache: Cache) -> None:
    assert await cache.get("orders:absent") is None


async def test_set_replaces_the_previous_value(cache: Cache) -> None:
    await cache.set("orders:1", b"old", ttl_s=30)
    await cache.set("orders:1", b"new", ttl_s=30)
    assert await cache.get("orders:1") == b"new"


async def test_value_is_gone_once_its_ttl_has_passed(cache: Cache) -> None:
    await cache.set("orders:short", b"v", ttl_s=0.2)
    await cache.set("orders:long", b"v", ttl_s=30)
    assert await cache.get("orders:short") == b"v"
    await eventually(lambda: cache.get("orders:short"), until=lambda v: v is None, what="expiry")
    assert await cache.get("orders:long") == b"v"


async def test_delete_removes_only_the_named_keys(cache: Cache) -> None:
    for key in ("a:1", "a:2", "a:3"):
        await cache.set(key, key.encode(), ttl_s=30)
    await cache.delete("a:1", "a:3", "a:never-set")
    assert [await cache.get(k) for k in ("a:1", "a:2", "a:3")] == [None, b"a:2", None]


async def test_delete_prefix_removes_every_key_under_it_and_nothing_else(cache: Cache) -> None:
    keys = [
        "tickets:list:u1:open:20:0",
        "tickets:list:u1:open:20:20",
        "tickets:list:u1:all:50:0",
        "tickets:list:u10:open:20:0",  # shares the characters "tickets:list:u1" but not the prefix
        "tickets:list:u2:open:20:0",
        "tickets:get:u1",
    ]
    for key in keys:
        await cache.set(key, b"page", ttl_s=30)

    await cache.delete_prefix("tickets:list:u1:")

    left = {k: await cache.get(k) for k in keys}
    assert left == {
        "tickets:list:u1:open:20:0": None,
        "tickets:list:u1:open:20:20": None,
        "tickets:list:u1:all:50:0": None,
        "tickets:list:u10:open:20:0": b"page",
        "tickets:list:u2:open:20:0": b"page",
        "tickets:get:u1": b"page",
    }


async def test_keys_written_after_delete_prefix_are_served(cache: Cache) -> None:
    await cache.set("tickets:list:u1:open:20:0", b"old", ttl_s=30)
    await cache.delete_prefix("tickets:list:u1:")
    await cache.set("tickets:list:u1:open:20:0", b"new", ttl_s=30)
    assert await cache.get("tickets:list:u1:open:20:0") == b"new"


async def test_a_shorter_prefix_invalidates_deeper_keys(cache: Cache) -> None:
    await cache.set("tickets:list:u1:open:20:0", b"page", ttl_s=30)
    await cache.set("orders:1", b"order", ttl_s=30)
    await cache.delete_prefix("tickets:")
    assert await cache.get("tickets:list:u1:open:20:0") is None
    assert await cache.get("orders:1") == b"order"


async def test_delete_prefix_refuses_a_prefix_that_does_not_end_at_a_separator(cache: Cache) -> None:
    with pytest.raises(ValueError, match="must end with"):
        await cache.delete_prefix("tickets:list:u1")


async def test_get_or_load_stores_the_loaded_value_and_serves_it_without_loading(cache: Cache) -> None:
    loader = Loads(b"row")
    assert await cache.get_or_load("orders:7", loader, ttl_s=30) == b"row"
    assert await cache.get_or_load("orders:7", loader, ttl_s=30) == b"row"
    assert loader.calls == 1
    assert await cache.get("orders:7") == b"row"


async def test_hits_and_misses_are_counted(cache: Cache) -> None:
    await cache.get_or_load("orders:8", Loads(), ttl_s=30)
    await cache.get_or_load("orders:8", Loads(), ttl_s=30)
    await cache.get("orders:9")
    assert (counted(cache, "hit"), counted(cache, "miss"), counted(cache, "error")) == (1, 2, 0)


@pytest.mark.warm_pool
async def test_a_hundred_concurrent_misses_of_one_key_call_the_loader_once(cache: Cache) -> None:
    loader = Loads(b"shared", gated=True)
    callers = [asyncio.create_task(cache.get_or_load("orders:hot", loader, ttl_s=30)) for _ in range(100)]
    # Hold the load until every caller has looked and missed, so all 100 really overlap it.
    await eventually(lambda: counted(cache, "miss"), until=lambda n: n == 100, what="100 misses")
    loader.gate.set()
    assert await asyncio.gather(*callers) == [b"shared"] * 100
    assert loader.calls == 1


async def test_misses_of_different_keys_load_each_key(cache: Cache) -> None:
    loader = Loads()
    await asyncio.gather(*(cache.get_or_load(f"orders:{i}", loader, ttl_s=30) for i in range(5)))
    assert loader.calls == 5


async def test_loader_exception_reaches_every_waiter_and_is_not_cached(cache: Cache) -> None:
    calls = 0
    gate = asyncio.Event()

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise LookupError("source says no")

    callers = [asyncio.create_task(cache.get_or_load("orders:bad", failing, ttl_s=30)) for _ in range(10)]
    await eventually(lambda: counted(cache, "miss"), until=lambda n: n == 10, what="10 misses")
    gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert calls == 1
    assert await cache.get("orders:bad") is None
    assert await cache.get_or_load("orders:bad", Loads(b"recovered"), ttl_s=30) == b"recovered"


async def test_a_cancelled_caller_does_not_cancel_the_load_others_wait_on(cache: Cache) -> None:
    loader = Loads(b"v", gated=True)
    first = asyncio.create_task(cache.get_or_load("orders:c", loader, ttl_s=30))
    second = asyncio.create_task(cache.get_or_load("orders:c", loader, ttl_s=30))
    await eventually(lambda: loader.calls, until=lambda n: n == 1, what="load started")
    await eventually(lambda: counted(cache, "miss"), until=lambda n: n == 2, what="2 misses")
    first.cancel()
    loader.gate.set()
    assert await second == b"v"
    assert first.cancelled()


async def test_value_loaded_before_a_prefix_invalidation_is_not_served_after_it(cache: Cache) -> None:
    """The cache-aside race: the loader read the old row, a write invalidated, then the load lands."""
    loader = Loads(b"old page", gated=True)
    load = asyncio.create_task(cache.get_or_load("tickets:list:u1:all:20:0", loader, ttl_s=30))
    await eventually(lambda: loader.calls, until=lambda n: n == 1, what="load started")
    await cache.delete_prefix("tickets:list:u1:")
    loader.gate.set()
    assert await load == b"old page"  # the caller that asked before the write still gets its answer
    assert await cache.get("tickets:list:u1:all:20:0") is None


async def test_a_caller_after_an_invalidation_does_not_join_a_load_that_began_before_it(cache: Cache) -> None:
    old, new = Loads(b"old page", gated=True), Loads(b"new page")
    before = asyncio.create_task(cache.get_or_load("tickets:list:u1:all:20:0", old, ttl_s=30))
    await eventually(lambda: old.calls, until=lambda n: n == 1, what="old load started")
    await cache.delete_prefix("tickets:list:u1:")  # the user's write committed
    after = asyncio.create_task(cache.get_or_load("tickets:list:u1:all:20:0", new, ttl_s=30))
    await eventually(lambda: counted(cache, "miss"), until=lambda n: n == 2, what="second caller missed")
    old.gate.set()
    assert (await before, await after) == (b"old page", b"new page")
    assert await cache.get("tickets:list:u1:all:20:0") == b"new page"


async def test_value_loaded_before_a_delete_is_not_served_after_it(cache: Cache) -> None:
    loader = Loads(b"old", gated=True)
    load = asyncio.create_task(cache.get_or_load("videos:1", loader, ttl_s=30))
    await eventually(lambda: loader.calls, until=lambda n: n == 1, what="load started")
    await cache.delete("videos:1")
    loader.gate.set()
    await load
    assert await cache.get("videos:1") is None


async def test_ttl_must_be_positive(cache: Cache) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await cache.set("orders:1", b"v", ttl_s=0)
