"""The batch statement against PostgreSQL: an order written from its JSON reads back as the same bytes
the cache serves, at the edges of each column's type, and an update replaces the item list."""

from __future__ import annotations

import random
from typing import Any

import asyncpg

from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import MAX_BIGINT, MAX_INT, Order, order_json, parse_order

AWKWARD = 'quote " backslash \\ slash / tab \t newline \n line-sep \u2028 emoji 🚲 кириллица'


def edge_order(rng: random.Random, order_uid: str, items: int) -> Order:
    data: dict[str, Any] = fake_order(rng, order_uid=order_uid, items=items)
    data["entry"] = AWKWARD
    data["internal_signature"] = ""
    data["sm_id"] = MAX_INT
    data["date_created"] = "2021-11-26T06:22:19.123456+03:00"  # stored and served in UTC
    data["delivery"]["address"] = AWKWARD
    data["payment"] |= {"amount": MAX_BIGINT, "payment_dt": 0, "custom_fee": MAX_BIGINT}
    for n, item in enumerate(data["items"]):
        item |= {"name": f"{AWKWARD} {n}", "chrt_id": MAX_BIGINT, "sale": 100, "status": MAX_INT}
    return parse_order(data)


async def stored(conn: asyncpg.Connection, order_uid: str) -> bytes:
    found = await repository.fetch_order(conn, order_uid)
    assert found is not None
    return order_json(found)


async def test_orders_read_back_as_the_bytes_written_at_every_types_edge(fresh_pg_dsn):
    rng = random.Random(34)
    orders = sorted(
        (edge_order(rng, f"edge{n}", items=1 + n) for n in range(3)), key=lambda o: o["order_uid"]
    )
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        async with conn.transaction():
            await repository.upsert_orders(conn, [order_json(o) for o in orders])
        for order in orders:
            assert await stored(conn, order["order_uid"]) == order_json(order)
    finally:
        await conn.close()


async def test_an_update_replaces_the_item_list_whether_it_grows_or_shrinks(fresh_pg_dsn):
    rng = random.Random(35)
    first = [edge_order(rng, "grows", items=2), edge_order(rng, "shrinks", items=4)]
    update = [edge_order(rng, "grows", items=5), edge_order(rng, "shrinks", items=1)]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        for batch in (first, update):
            async with conn.transaction():
                await repository.upsert_orders(conn, [order_json(o) for o in batch])
        for order in update:
            assert await stored(conn, order["order_uid"]) == order_json(order)
        counts = dict(await conn.fetch("SELECT order_uid, count(*) FROM items GROUP BY order_uid"))
        assert counts == {"grows": 5, "shrinks": 1}
    finally:
        await conn.close()


async def test_the_item_trim_reads_the_batchs_items_through_the_index_whatever_the_plan(fresh_pg_dsn):
    # The trim of items past an order's new list joined the batch to the items table; where the
    # planner's estimates favoured a hash join it read the whole table for every batch, slower as the
    # table grew. The batch's
    # order_uids are now an index condition of the trim's scan, whichever join the planner picks; a
    # table this small is where its estimates favour the hash join.
    rng = random.Random(36)
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        for start in (0, 1_000):
            bulk = [fake_order(rng, order_uid=f"bulk{n:05d}") for n in range(start, start + 1_000)]
            async with conn.transaction():
                await repository.upsert_orders(conn, [order_json(parse_order(o)) for o in bulk])
        await conn.execute("ANALYZE items")
        batch = [order_json(parse_order(fake_order(rng, order_uid=f"next{n:03d}"))) for n in range(500)]
        explained = await conn.fetch(
            "EXPLAIN " + repository.UPSERT_ORDERS, (b"[" + b",".join(batch) + b"]").decode()
        )
        trim = "\n".join(row[0] for row in explained).split("Delete on items")[1]
        assert "Seq Scan on items" not in trim, trim
        assert "on pk_items" in trim or "using pk_items" in trim, trim
        assert "order_uid = ANY" in trim, trim
    finally:
        await conn.close()
