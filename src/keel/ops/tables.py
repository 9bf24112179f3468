"""The operator audit: every replay and purge of dead letters, who ran it and what it touched."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB

from keel.core.tables import metadata

ops_audit = Table(
    "ops_audit",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),  # replay | purge
    Column("topic", Text, nullable=False),
    # The selection (reason, source topic, time range, ids) and any edited payload's record id.
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("records", Integer, nullable=False),
    Index("ix_ops_audit_at", "at"),
)
