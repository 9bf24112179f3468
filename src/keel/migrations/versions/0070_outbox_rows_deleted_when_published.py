"""outbox rows deleted once published

Revision ID: 0070
Revises: 0060
Create Date: 2026-12-04 08:10:00.000000

The relay deletes a row once the broker acknowledged it, instead of setting `published_at` (and
retention deleting it days later): the index retention read is gone, and so are the rows already
published. The expand half of expand/contract: `published_at` stays while relays of the previous
release may still run beside the new ones during a rollout (they mark rows; the claim skips those); a
later migration deletes what they marked and drops the column.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0070"
down_revision: str | None = "0060"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_outbox_events_published_at_created_at", table_name="outbox_events")
    op.execute("DELETE FROM outbox_events WHERE published_at IS NOT NULL")


def downgrade() -> None:
    op.create_index(
        "ix_outbox_events_published_at_created_at", "outbox_events", ["published_at", "created_at"]
    )
