"""Tables owned by the orchestrator: workflows, their steps, TTS jobs, parked events, restart audit."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from keel.core.tables import metadata

STATUSES = "('pending', 'running', 'completed', 'failed')"

workflows = Table(
    "cityguide_workflows",
    metadata,
    Column("route_id", Text, primary_key=True),
    Column("mode", Text, nullable=False),
    Column("lang", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("route", JSONB, nullable=False),
    # When route.confirmed was produced (its created-at), for route_to_first_audio_seconds.
    Column("confirmed_at", DateTime(timezone=True), nullable=False),
    Column("first_audio_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    CheckConstraint(f"status IN {STATUSES}", name="status"),
    # The operator console's listing, newest first (keel.ops.workflows).
    Index("ix_cityguide_workflows_created_at", text("created_at DESC"), "route_id"),
)

workflow_steps = Table(
    "cityguide_workflow_steps",
    metadata,
    Column("route_id", Text, ForeignKey("cityguide_workflows.route_id", ondelete="CASCADE"), nullable=False),
    Column("step", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
    PrimaryKeyConstraint("route_id", "step"),
    CheckConstraint(f"status IN {STATUSES}", name="status"),
)

tts_jobs = Table(
    "cityguide_tts_jobs",
    metadata,
    Column("route_id", Text, ForeignKey("cityguide_workflows.route_id", ondelete="CASCADE"), nullable=False),
    Column("story_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("title", Text, nullable=False, server_default=text("''")),
    Column("text", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    # The tts_batch attempt this job was last requested in; results of older attempts are stale.
    Column("attempt", Integer, nullable=False, server_default=text("1")),
    Column("audio_id", Text),
    Column("duration_s", Float),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("route_id", "story_id"),
    CheckConstraint(f"status IN {STATUSES}", name="status"),
    Index("ix_cityguide_tts_jobs_route_id_position", "route_id", "position", unique=True),
)

# Events that arrived before what they refer to (tts.completed before the stories, stories before the
# route): kept here and applied when their workflow or job appears, never lost.
parked_events = Table(
    "cityguide_parked_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("route_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_cityguide_parked_events_route_id", "route_id"),
)

restarts = Table(
    "cityguide_workflow_restarts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("route_id", Text, ForeignKey("cityguide_workflows.route_id", ondelete="CASCADE"), nullable=False),
    Column("step", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("reason", Text),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_cityguide_workflow_restarts_route_id", "route_id"),
)
