"""How fast the batch consumer stores orders from the real broker into PostgreSQL (printed, not asserted)."""

from __future__ import annotations

import statistics
import time

import asyncpg

from keel.orders.fake import fake_order
from tests.integration.orders.conftest import send, serving
from tests.support.eventually import eventually

COUNT = 5_000


async def test_ingest_stores_every_order_once_and_prints_the_rate(
    order_settings, producer, rng, fresh_pg_dsn
):
    settings = order_settings()
    orders = [fake_order(rng) for _ in range(COUNT)]
    for start in range(0, COUNT, 1_000):
        await send(producer, settings.kafka_topic, orders[start : start + 1_000])
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:

        async def stored() -> int:
            count: int = await conn.fetchval("SELECT count(*) FROM orders")
            return count

        async with serving(settings) as (_, client):
            # The clock starts at the first stored order: the group join is not ingest time.
            first = await eventually(stored, until=lambda n: n > 0, timeout_s=30, what="first order stored")
            started = time.perf_counter()
            await eventually(stored, until=lambda n: n == COUNT, timeout_s=60, what=f"{COUNT} orders stored")
            elapsed = time.perf_counter() - started
            sample = [o["order_uid"] for o in orders[:300]]
            cached = [await client.get(f"/order/{uid}") for uid in sample]
            from_db = [await client.get(f"/order/{uid}", params={"nocache": "1"}) for uid in sample]
        items = await conn.fetchval("SELECT count(*) FROM items")
    finally:
        await conn.close()

    assert items == sum(len(o["items"]) for o in orders)
    assert {r.headers["X-Source"] for r in cached} == {"cache"} and {
        r.headers["X-Source"] for r in from_db
    } == {"db"}
    rate = (COUNT - first) / elapsed
    print(f"\norders ingest: {COUNT - first} orders ({items} items) in {elapsed:.2f}s = {rate:,.0f} orders/s")
    print(f"GET /order server time, median: cache {median_ms(cached):.3f} ms, db {median_ms(from_db):.3f} ms")


def median_ms(responses: list) -> float:
    return statistics.median(float(r.headers["X-Duration-ms"]) for r in responses)
