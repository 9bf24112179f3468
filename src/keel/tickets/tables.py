"""Tables owned by the ticket service."""

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
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from keel.core.tables import metadata

tickets = Table(
    "tickets",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'OPEN'")),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('OPEN', 'CLOSED')", name="status"),
    # The seed's list indexes: newest first per user, with and without a status filter.
    Index("ix_tickets_created_by_created_at", "created_by", text("created_at DESC")),
    Index("ix_tickets_created_by_status_created_at", "created_by", "status", text("created_at DESC")),
)

# The durable half of Idempotency-Key: written in the ticket's own transaction, so a key maps to one
# ticket even when Redis (the fast path) lost it. `response` is what the first request answered.
ticket_idempotency = Table(
    "ticket_idempotency",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("ticket_id", UUID(as_uuid=False), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "key"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("ticket_id", UUID(as_uuid=False), ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
    Column("filename", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("storage_key", Text, nullable=False),
    Column("uploaded_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_attachments_ticket_id_created_at", "ticket_id", "created_at"),
    # What the per-user byte quota summed before `attachment_usage`; dropped once no process of the
    # release before migration 0081 can run.
    Index("ix_attachments_uploaded_by", "uploaded_by"),
)

# The bytes each user's attachments hold, for the per-user quota: kept by a trigger on `attachments`
# (migration 0081) through every insert and delete, so the quota reads one row, not the user's history.
attachment_usage = Table(
    "attachment_usage",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("bytes", BigInteger, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("ticket_id", UUID(as_uuid=False), nullable=False),
    Column("user_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Belt and braces beside the inbox: one notification per event, whatever happens upstream.
    UniqueConstraint("event_id"),
    Index("ix_notifications_user_id_created_at", "user_id", "created_at"),
)
