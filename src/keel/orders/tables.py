"""Tables owned by the order service: the seed's four (`orders`, `deliveries`, `payments`, `items`).

Money is whole minor units (bigint), as the model sends it; checks repeat the schema's rules so the
database refuses what the validator would, whoever writes."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)

from keel.core.tables import metadata


def _order_fk() -> Column[str]:
    return Column("order_uid", Text, ForeignKey("orders.order_uid", ondelete="CASCADE"), nullable=False)


orders = Table(
    "orders",
    metadata,
    Column("order_uid", Text, primary_key=True),
    Column("track_number", Text, nullable=False),
    Column("entry", Text, nullable=False),
    Column("locale", Text, nullable=False),
    Column("internal_signature", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("delivery_service", Text, nullable=False),
    Column("shardkey", Text, nullable=False),
    Column("sm_id", Integer, nullable=False),
    Column("date_created", DateTime(timezone=True), nullable=False),
    Column("oof_shard", Text, nullable=False),
    # When this row was last written: the cache warms with the most recently written orders.
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_orders_updated_at", text("updated_at DESC")),
)

deliveries = Table(
    "deliveries",
    metadata,
    _order_fk(),
    Column("name", Text, nullable=False),
    Column("phone", Text, nullable=False),
    Column("zip", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("email", Text, nullable=False),
    PrimaryKeyConstraint("order_uid"),
)

payments = Table(
    "payments",
    metadata,
    _order_fk(),
    Column("transaction", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("payment_dt", BigInteger, nullable=False),
    Column("bank", Text, nullable=False),
    Column("delivery_cost", BigInteger, nullable=False),
    Column("goods_total", BigInteger, nullable=False),
    Column("custom_fee", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_uid"),
    CheckConstraint(
        "amount >= 0 AND delivery_cost >= 0 AND goods_total >= 0 AND custom_fee >= 0", name="money"
    ),
)

# An order's items in the order they came (`idx`): an update replaces the whole list.
items = Table(
    "items",
    metadata,
    _order_fk(),
    Column("idx", Integer, nullable=False),
    Column("chrt_id", BigInteger, nullable=False),
    Column("track_number", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("rid", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("sale", Integer, nullable=False),
    Column("size", Text, nullable=False),
    Column("total_price", BigInteger, nullable=False),
    Column("nm_id", BigInteger, nullable=False),
    Column("brand", Text, nullable=False),
    Column("status", Integer, nullable=False),
    PrimaryKeyConstraint("order_uid", "idx"),
    CheckConstraint("price >= 0 AND total_price >= 0", name="money"),
)
