"""Order use cases: ingest a batch of validated orders, read one (cache first), warm the cache.
Routes and the consumer call these; every dependency comes in through the constructor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from keel.core.db import Database, UnitOfWork
from keel.core.errors import NotFound
from keel.orders import invalidation, repository
from keel.orders.cache import OrderCache
from keel.orders.schemas import Order, order_json

log = logging.getLogger("keel.orders")

Source = Literal["cache", "db"]
MAX_ID_LENGTH = 128  # the schema's limit: a longer id cannot exist, so no need to ask the database


@dataclass(frozen=True, slots=True)
class Found:
    body: bytes
    source: Source


def latest_per_order(orders: Sequence[Order]) -> list[Order]:
    """One order per order_uid, the last one in stream order (a batch may hold an order and its
    update), sorted by order_uid so concurrent batches lock rows in the same order (no deadlocks)."""
    latest = {order["order_uid"]: order for order in orders}
    return [latest[uid] for uid in sorted(latest)]


class OrderService:
    def __init__(self, db: Database, cache: OrderCache | None, *, sender: str = "") -> None:
        self.db = db
        # None when CACHE_ENABLED is off: every read goes to the database.
        self.cache = cache
        # Who this process is in the orders-changed notifications (keel.orders.invalidation).
        self.sender = sender

    async def save(self, orders: Sequence[Order], uow: UnitOfWork) -> None:
        """Upsert the orders in `uow`'s transaction; the cache learns them only once it committed,
        and so do the other replicas' caches (a notification sent with the commit)."""
        latest = latest_per_order(orders)
        # The bytes the database gets are the ones the cache serves.
        bodies = [(order["order_uid"], order_json(order)) for order in latest]
        conn = await uow.raw()
        await repository.upsert_orders(conn, [body for _, body in bodies])
        chunks = list(invalidation.payloads(self.sender, [uid for uid, _ in bodies]))
        await conn.execute(invalidation.NOTIFY, invalidation.CHANNEL, chunks)
        cache = self.cache
        if cache is not None:

            async def publish() -> None:
                cache.put_many(bodies)

            uow.after_commit(publish)

    def cached(self, order_uid: str) -> bytes | None:
        """The order's bytes on a cache hit, else None: the caller then reads through `get`, which
        counts the miss (so a miss is counted once)."""
        return self.cache.hit(order_uid) if self.cache is not None else None

    async def get(self, order_uid: str, *, nocache: bool = False) -> Found:
        cache = None if nocache else self.cache
        stamp = 0
        if cache is not None:
            body = cache.get(order_uid)
            if body is not None:
                return Found(body, "cache")
            stamp = cache.stamp()
        order = None
        if len(order_uid) <= MAX_ID_LENGTH:
            async with self.db.connection() as conn:
                order = await repository.fetch_order(conn, order_uid)
        if order is None:
            raise NotFound(f"order {order_uid!r} not found", headers={"X-Source": "db"})
        body = order_json(order)
        if cache is not None:
            cache.fill(order_uid, body, stamp)
        return Found(body, "db")

    async def warm(self, limit: int) -> int:
        """Load the `limit` most recently written orders into the cache (one query); returns how many."""
        cache = self.cache
        if cache is None or limit <= 0:
            return 0
        stamp = cache.stamp()
        async with self.db.connection() as conn:
            recent = await repository.fetch_recent(conn, min(limit, cache.max_entries))
        if cache.stamp() != stamp:
            return 0  # an order changed while this read: what it read may be older (start cold)
        # Oldest first, so the newest end up the most recently used.
        cache.put_many((o["order_uid"], order_json(o)) for o in reversed(recent))
        return len(recent)
