"""The in-memory order cache: bounded LRU, and read-through fills that never overwrite newer data."""

from __future__ import annotations

from keel.orders.cache import OrderCache


def test_the_least_recently_used_order_is_evicted_first():
    cache = OrderCache(max_entries=2)
    cache.put_many([("a", b"A"), ("b", b"B")])
    assert cache.get("a") == b"A"  # a is now more recent than b
    cache.put_many([("c", b"C")])
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") == b"A" and cache.get("c") == b"C"


def test_a_put_replaces_the_stored_order():
    cache = OrderCache(max_entries=5)
    cache.put_many([("a", b"old")])
    cache.put_many([("a", b"new")])
    assert cache.get("a") == b"new" and len(cache) == 1


def test_a_fill_after_a_quiet_read_is_stored():
    cache = OrderCache(max_entries=5)
    stamp = cache.stamp()
    assert cache.fill("a", b"from db", stamp)
    assert cache.get("a") == b"from db"


def test_a_fill_is_refused_when_the_consumer_wrote_during_the_read():
    cache = OrderCache(max_entries=1)
    stamp = cache.stamp()  # the database read starts here and sees the old row
    cache.put_many([("a", b"new")])  # the consumer commits the update meanwhile
    cache.put_many([("b", b"B")])  # and the update is even evicted again
    assert not cache.fill("a", b"old", stamp)
    assert cache.get("a") is None  # a miss, never the stale order
