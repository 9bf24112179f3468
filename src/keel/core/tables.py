"""The one MetaData every Keel table belongs to, and the core's own tables (outbox, inbox)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Transactional outbox: written in the business transaction, published by the relay.
# `shard` = hash(key) mod N; a relay publishes a shard only while it holds that shard's advisory lock,
# so one key is never published by two relays at once and its order holds.
outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=False), nullable=False, unique=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=True),
    Column("event_type", Text, nullable=False),
    Column("wire", Text, nullable=False, server_default=text("'envelope'")),
    Column("payload", JSONB, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("shard", SmallInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Relays delete a row once the broker acknowledged it. Relays of releases before migration 0070
    # marked it here instead; the claim skips such rows, and a later migration drops the column.
    Column("published_at", DateTime(timezone=True), nullable=True),
    # The relay's scan: unpublished rows of a shard in id order, from a small partial index.
    Index(
        "ix_outbox_events_unpublished",
        "shard",
        "id",
        postgresql_where=text("published_at IS NULL"),
    ),
)

# Inbox: one row per (consumer, event) handled, inserted in the effect's own transaction.
processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
    # The retention job's scan: oldest first.
    Index("ix_processed_events_processed_at", "processed_at"),
)
