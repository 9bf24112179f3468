"""Tables owned by the video service."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from keel.core.tables import metadata

videos = Table(
    "videos",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("title", Text, nullable=False),
    Column("original_url", Text, nullable=False),
    # The user who registered it (reads and retries are theirs); NULL for rows from before owners.
    Column("owner", Text, nullable=True),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("error", Text, nullable=True),
    # HLS jobs started for this row (a crash-restart counts too) since it was registered or last
    # retried; bounded by the retry policy.
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Times a failed video was sent back to pending (`POST /api/videos/{id}/retry`).
    Column("retries", Integer, nullable=False, server_default=text("0")),
    Column("processing_started_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('pending', 'processing', 'ready', 'failed')", name="status"),
    UniqueConstraint("original_url"),
    # The reaper's scan: only rows in processing, oldest first.
    Index(
        "ix_videos_processing_started_at",
        "processing_started_at",
        postgresql_where=text("status = 'processing'"),
    ),
)
