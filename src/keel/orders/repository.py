"""The order service's SQL: a whole batch written in one statement (the orders' JSON in, four tables
out, no per-order round trips) and one-statement reads that assemble orders back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

_ORDER_COLUMNS = [
    "order_uid",
    "track_number",
    "entry",
    "locale",
    "internal_signature",
    "customer_id",
    "delivery_service",
    "shardkey",
    "sm_id",
    "date_created",
    "oof_shard",
]
_DELIVERY_COLUMNS = ["order_uid", "name", "phone", "zip", "city", "address", "region", "email"]
_PAYMENT_COLUMNS = [
    "order_uid",
    "transaction",
    "request_id",
    "currency",
    "provider",
    "amount",
    "payment_dt",
    "bank",
    "delivery_cost",
    "goods_total",
    "custom_fee",
]
_ITEM_COLUMNS = [
    "order_uid",
    "idx",
    "chrt_id",
    "track_number",
    "price",
    "rid",
    "name",
    "sale",
    "size",
    "total_price",
    "nm_id",
    "brand",
    "status",
]

_TYPES = {
    "sm_id": "int",
    "date_created": "timestamptz",
    "amount": "bigint",
    "payment_dt": "bigint",
    "delivery_cost": "bigint",
    "goods_total": "bigint",
    "custom_fee": "bigint",
    "chrt_id": "bigint",
    "price": "bigint",
    "sale": "int",
    "total_price": "bigint",
    "nm_id": "bigint",
    "status": "int",
}


def _fields(columns: Sequence[str], skip: Sequence[str] = ()) -> str:
    """The column definitions `jsonb_to_record(set)` reads a JSON object's fields into."""
    return ", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in columns if c not in skip)


def _updates(columns: Sequence[str], *keys: str) -> str:
    return ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)


_ITEM_FIELDS = _ITEM_COLUMNS[2:]

# The whole batch in one statement and one parameter: the orders as `order_json` writes them, a JSON
# array PostgreSQL reads once into rows (`src`) and writes to the four tables. A column array bound
# per field cost the client more than the server (asyncpg checks each element of each array);
# bench/results/changes.md has the figures.
#  - Items are upserted by (order_uid, idx) and an order's items past its new list are deleted: an
#    update replaces the list, and no two parts of the statement touch one row (a DELETE and an
#    INSERT of one key in one statement may run in either order).
#  - The trim names the batch's order_uids as an array as well as through the join: with the join
#    alone the planner, which guesses 100 rows for `src`, could hash it and read the whole items
#    table for every batch, slower as the table grew (docs/design-decisions.md); the array is an
#    index condition whatever plan it picks.
#  - Rows are written in the array's order: the caller sorts by order_uid, so concurrent batches
#    lock rows in the same order (no deadlocks).
UPSERT_ORDERS = f"""
WITH src AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset($1::text::jsonb)
        AS o({_fields(_ORDER_COLUMNS)}, delivery jsonb, payment jsonb, items jsonb)
),
written_orders AS (
    INSERT INTO orders ({", ".join(_ORDER_COLUMNS)}, updated_at)
    SELECT {", ".join(_ORDER_COLUMNS)}, now() FROM src
    ON CONFLICT (order_uid) DO UPDATE SET
        {_updates(_ORDER_COLUMNS, "order_uid")}, updated_at = EXCLUDED.updated_at
),
written_deliveries AS (
    INSERT INTO deliveries ({", ".join(_DELIVERY_COLUMNS)})
    SELECT src.order_uid, d.*
    FROM src, jsonb_to_record(src.delivery) AS d({_fields(_DELIVERY_COLUMNS, ["order_uid"])})
    ON CONFLICT (order_uid) DO UPDATE SET {_updates(_DELIVERY_COLUMNS, "order_uid")}
),
written_payments AS (
    INSERT INTO payments ({", ".join(_PAYMENT_COLUMNS)})
    SELECT src.order_uid, p.*
    FROM src, jsonb_to_record(src.payment) AS p({_fields(_PAYMENT_COLUMNS, ["order_uid"])})
    ON CONFLICT (order_uid) DO UPDATE SET {_updates(_PAYMENT_COLUMNS, "order_uid")}
),
written_items AS (
    INSERT INTO items ({", ".join(_ITEM_COLUMNS)})
    SELECT src.order_uid, (i.n - 1)::int, {", ".join(f"i.{c}" for c in _ITEM_FIELDS)}
    FROM src CROSS JOIN LATERAL ROWS FROM (
        jsonb_to_recordset(src.items) AS ({_fields(_ITEM_FIELDS)})
    ) WITH ORDINALITY AS i({", ".join(_ITEM_FIELDS)}, n)
    ON CONFLICT (order_uid, idx) DO UPDATE SET {_updates(_ITEM_COLUMNS, "order_uid", "idx")}
)
DELETE FROM items x USING src
WHERE x.order_uid = ANY(ARRAY(SELECT order_uid FROM src))
  AND x.order_uid = src.order_uid AND x.idx >= jsonb_array_length(src.items)
"""


async def upsert_orders(conn: asyncpg.Connection, documents: Sequence[bytes]) -> None:
    """Write orders given as `order_json` serialised them (distinct order_uids, sorted by order_uid)
    in one statement, whatever their number."""
    await conn.execute(UPSERT_ORDERS, (b"[" + b",".join(documents) + b"]").decode())


# Items come back as one JSON array per order, already in the model's key order.
_ITEMS_JSON = (
    "(SELECT coalesce(json_agg(json_build_object("
    + ", ".join(f"'{c}', i.{c}" for c in _ITEM_COLUMNS[2:])
    + ") ORDER BY i.idx), '[]')::text FROM items i WHERE i.order_uid = o.order_uid) AS items_json"
)
_SELECT = f"""
SELECT o.order_uid, o.track_number, o.entry,
       d.name AS d_name, d.phone AS d_phone, d.zip AS d_zip, d.city AS d_city,
       d.address AS d_address, d.region AS d_region, d.email AS d_email,
       p.transaction AS p_transaction, p.request_id AS p_request_id, p.currency AS p_currency,
       p.provider AS p_provider, p.amount AS p_amount, p.payment_dt AS p_payment_dt, p.bank AS p_bank,
       p.delivery_cost AS p_delivery_cost, p.goods_total AS p_goods_total, p.custom_fee AS p_custom_fee,
       {_ITEMS_JSON},
       o.locale, o.internal_signature, o.customer_id, o.delivery_service, o.shardkey, o.sm_id,
       o.date_created, o.oof_shard
FROM orders o
JOIN deliveries d ON d.order_uid = o.order_uid
JOIN payments p ON p.order_uid = o.order_uid
"""
SELECT_ONE = _SELECT + "WHERE o.order_uid = $1"
SELECT_RECENT = _SELECT + "ORDER BY o.updated_at DESC, o.order_uid LIMIT $1"


def order_from_row(row: asyncpg.Record) -> dict[str, Any]:
    """A row of `_SELECT` → the order as a dict in the model's field order."""
    return {
        "order_uid": row["order_uid"],
        "track_number": row["track_number"],
        "entry": row["entry"],
        "delivery": {k: row[f"d_{k}"] for k in _DELIVERY_COLUMNS[1:]},
        "payment": {k: row[f"p_{k}"] for k in _PAYMENT_COLUMNS[1:]},
        "items": orjson.loads(row["items_json"]),
        "locale": row["locale"],
        "internal_signature": row["internal_signature"],
        "customer_id": row["customer_id"],
        "delivery_service": row["delivery_service"],
        "shardkey": row["shardkey"],
        "sm_id": row["sm_id"],
        "date_created": row["date_created"],
        "oof_shard": row["oof_shard"],
    }


async def fetch_order(conn: asyncpg.Connection, order_uid: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(SELECT_ONE, order_uid)
    return order_from_row(row) if row is not None else None


async def fetch_recent(conn: asyncpg.Connection, limit: int) -> list[dict[str, Any]]:
    """The `limit` most recently written orders, newest first, in one statement."""
    return [order_from_row(row) for row in await conn.fetch(SELECT_RECENT, limit)]
