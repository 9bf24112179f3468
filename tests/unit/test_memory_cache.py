"""What only the in-process cache does: bound its size, least recently used out first."""

from __future__ import annotations

from keel.core.cache import MemoryCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_cache_never_holds_more_than_max_entries() -> None:
    cache = MemoryCache(max_entries=10)
    for i in range(100):
        await cache.set(f"k:{i}", b"v", ttl_s=30)
    assert len(cache) == 10
    assert await cache.get("k:99") == b"v"
    assert await cache.get("k:89") is None


async def test_memory_cache_evicts_the_least_recently_used_entry() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("k:a", b"a", ttl_s=30)
    await cache.set("k:b", b"b", ttl_s=30)
    assert await cache.get("k:a") == b"a"  # a is now the most recently used
    await cache.set("k:c", b"c", ttl_s=30)
    assert [await cache.get(k) for k in ("k:a", "k:b", "k:c")] == [b"a", None, b"c"]


async def test_memory_cache_caps_ttls_at_max_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=10, max_ttl_s=60, clock=clock)
    await cache.set("k:1", b"v", ttl_s=3600)
    clock.now = 61
    assert await cache.get("k:1") is None


async def test_invalidations_stay_in_force_while_entries_they_hide_can_live() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=10, max_ttl_s=60, clock=clock)
    await cache.set("t:u1:page", b"old", ttl_s=60)
    await cache.delete_prefix("t:u1:")
    clock.now = 59
    assert await cache.get("t:u1:page") is None


async def test_too_many_live_invalidations_clear_the_cache_rather_than_grow_without_bound() -> None:
    cache = MemoryCache(max_entries=10)
    await cache.set("orders:1", b"v", ttl_s=30)
    for i in range(5000):
        await cache.delete(f"videos:{i}")
    assert await cache.get("orders:1") is None
    await cache.set("orders:1", b"v", ttl_s=30)
    assert await cache.get("orders:1") == b"v"
