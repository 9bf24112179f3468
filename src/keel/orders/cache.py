"""The order cache: serialised orders in process memory, least recently used evicted first.

Synchronous on purpose: a hit is a dict lookup with no await, which is what makes it the hot path."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from prometheus_client import Gauge

from keel.core.metrics import CACHE_REQUESTS, counted

CACHE_NAME = "orders"
ORDER_CACHE_ENTRIES = Gauge("order_cache_entries", "Orders held in the in-memory order cache")


class OrderCache:
    """Bounded LRU of order_uid → response bytes.

    Two kinds of write: `put_many` from the consumer after its commit (always the newest state), and
    `fill` after a read-through from the database. A fill is refused when any put happened since the
    read began (`stamp()`): the row read may be older than what the consumer put meanwhile, and a
    stale order written over a fresh one would be served until the order's next update."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._puts = 0
        # False while this process may miss another replica's updates (its invalidation feed is
        # down): nothing is served or filled from memory then, every read goes to the database.
        self.live = True
        self._hits = counted(CACHE_REQUESTS.labels(CACHE_NAME, "hit"))
        self._misses = CACHE_REQUESTS.labels(CACHE_NAME, "miss")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, order_uid: str) -> bytes | None:
        body = self.hit(order_uid)
        if body is None:
            self._misses.inc()
        return body

    def hit(self, order_uid: str) -> bytes | None:
        """`get` for a caller that falls back to `get` on None: counts hits only."""
        body = self._entries.get(order_uid) if self.live else None
        if body is not None:
            self._entries.move_to_end(order_uid)
            self._hits.inc()
        return body

    def put_many(self, entries: Iterable[tuple[str, bytes]]) -> None:
        for order_uid, body in entries:
            self._store(order_uid, body)
        self._puts += 1
        ORDER_CACHE_ENTRIES.set(len(self._entries))

    def stamp(self) -> int:
        return self._puts

    def forget_many(self, order_uids: Iterable[str]) -> None:
        """Drop orders another replica changed; a read-through begun before this fills nothing."""
        for order_uid in order_uids:
            self._entries.pop(order_uid, None)
        self._puts += 1
        ORDER_CACHE_ENTRIES.set(len(self._entries))

    def clear(self) -> None:
        self._entries.clear()
        self._puts += 1
        ORDER_CACHE_ENTRIES.set(0)

    def fill(self, order_uid: str, body: bytes, stamp: int) -> bool:
        if stamp != self._puts or not self.live:
            return False
        self._store(order_uid, body)
        ORDER_CACHE_ENTRIES.set(len(self._entries))
        return True

    def _store(self, order_uid: str, body: bytes) -> None:
        self._entries[order_uid] = body
        self._entries.move_to_end(order_uid)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
