"""The order service's SQL: set-based upserts for a whole batch (one statement per table, arrays in,
no per-order round trips) and one-statement reads that assemble orders back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from keel.orders.schemas import Order

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
    "idx": "int",
    "chrt_id": "bigint",
    "price": "bigint",
    "sale": "int",
    "total_price": "bigint",
    "nm_id": "bigint",
    "status": "int",
}


def _unnest(columns: Sequence[str]) -> str:
    """`unnest($1::text[], $2::int[], ...)`: one array parameter per column, rows zipped by position."""
    return ", ".join(f"${n}::{_TYPES.get(c, 'text')}[]" for n, c in enumerate(columns, start=1))


def _upsert(table: str, columns: Sequence[str], *, touch: bool = False) -> str:
    names = ", ".join(columns)
    updates = [f"{c} = EXCLUDED.{c}" for c in columns if c != "order_uid"]
    extra_name, extra_value = (", updated_at", ", now()") if touch else ("", "")
    if touch:
        updates.append("updated_at = EXCLUDED.updated_at")
    return (
        f"INSERT INTO {table} ({names}{extra_name}) "
        f"SELECT *{extra_value} FROM unnest({_unnest(columns)}) "
        f"ON CONFLICT (order_uid) DO UPDATE SET {', '.join(updates)}"
    )


UPSERT_ORDERS = _upsert("orders", _ORDER_COLUMNS, touch=True)
UPSERT_DELIVERIES = _upsert("deliveries", _DELIVERY_COLUMNS)
UPSERT_PAYMENTS = _upsert("payments", _PAYMENT_COLUMNS)
# An updated order replaces its items: the old list goes, the new one comes in, in one transaction.
DELETE_ITEMS = "DELETE FROM items WHERE order_uid = ANY($1::text[])"
INSERT_ITEMS = (
    f"INSERT INTO items ({', '.join(_ITEM_COLUMNS)}) SELECT * FROM unnest({_unnest(_ITEM_COLUMNS)})"
)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def upsert_orders(conn: asyncpg.Connection, orders: Sequence[Order]) -> None:
    """Write `orders` (distinct order_uids) with five statements, whatever their number."""
    order_rows, delivery_rows, payment_rows, item_rows = [], [], [], []
    for o in orders:
        uid = o.order_uid
        order_rows.append(tuple(getattr(o, c) for c in _ORDER_COLUMNS))
        delivery_rows.append((uid, *(getattr(o.delivery, c) for c in _DELIVERY_COLUMNS[1:])))
        payment_rows.append((uid, *(getattr(o.payment, c) for c in _PAYMENT_COLUMNS[1:])))
        for idx, item in enumerate(o.items):
            item_rows.append((uid, idx, *(getattr(item, c) for c in _ITEM_COLUMNS[2:])))
    await conn.execute(UPSERT_ORDERS, *_columns(order_rows, len(_ORDER_COLUMNS)))
    await conn.execute(UPSERT_DELIVERIES, *_columns(delivery_rows, len(_DELIVERY_COLUMNS)))
    await conn.execute(UPSERT_PAYMENTS, *_columns(payment_rows, len(_PAYMENT_COLUMNS)))
    await conn.execute(DELETE_ITEMS, [o.order_uid for o in orders])
    await conn.execute(INSERT_ITEMS, *_columns(item_rows, len(_ITEM_COLUMNS)))


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
