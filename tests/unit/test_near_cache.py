"""NearCache (keel.core.cache.near) in front of an in-process cache: recent values answer without the
shared cache, an invalidation drops them, and a value loaded across an invalidation is not kept."""

from __future__ import annotations

import asyncio

from keel.core.cache import MemoryCache, NearCache


class Counting:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return self.value


async def test_a_recent_value_is_served_near_until_its_owner_is_invalidated() -> None:
    shared = MemoryCache(100, name="near-test-1")
    near = NearCache(shared, ttl_s=60.0)
    load = Counting(b"v1")

    assert await near.get_or_load("t:list:ann:p1", load, 60) == b"v1"
    assert near.peek("t:list:ann:p1") == b"v1" and near.peek("t:list:bob:p1") is None

    await near.invalidate("t:list:ann:")
    assert near.peek("t:list:ann:p1") is None
    assert await shared.get("t:list:ann:p1") is None  # the shared cache was invalidated too
    load.value = b"v2"
    assert await near.get_or_load("t:list:ann:p1", load, 60) == b"v2" and load.calls == 2


async def test_a_value_loaded_while_its_owner_was_invalidated_is_not_kept_near() -> None:
    near = NearCache(MemoryCache(100, name="near-test-2"), ttl_s=60.0)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> bytes:
        started.set()
        await release.wait()
        return b"old"

    reading = asyncio.create_task(near.get_or_load("t:list:ann:p1", slow, 60))
    await started.wait()
    await near.invalidate("t:list:ann:")  # a write landed while the old page was being read
    release.set()
    assert await reading == b"old"  # its own caller gets it, but nobody after
    assert near.peek("t:list:ann:p1") is None


async def test_a_callers_own_shared_invalidation_replaces_delete_prefix() -> None:
    shared = MemoryCache(100, name="near-test-3")
    near = NearCache(shared, ttl_s=60.0)
    await near.get_or_load("t:list:ann:p1", Counting(b"v1"), 60)
    done: list[str] = []

    async def own() -> None:
        done.append("own")

    await near.invalidate("t:list:ann:", shared=own())
    assert done == ["own"] and near.peek("t:list:ann:p1") is None
    assert await shared.get("t:list:ann:p1") == b"v1"  # the caller's call was the shared invalidation
