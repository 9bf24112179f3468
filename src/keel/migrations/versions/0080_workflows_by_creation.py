"""cityguide workflows listed newest first through an index

Revision ID: 0080
Revises: 0070
Create Date: 2026-12-04 21:10:00.000000

The operator console lists workflows by `created_at DESC, route_id` (optionally by status and a time
window); without an index every listing sorted the whole table, slower as it grew
(bench/results/changes.md has the figures). A plain CREATE INDEX, inside the migration's transaction
(the whole upgrade holds one advisory lock, keel.core.schema): it blocks writes to the table while
it builds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0080"
down_revision: str | None = "0070"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_cityguide_workflows_created_at",
        "cityguide_workflows",
        [sa.literal_column("created_at DESC"), "route_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_cityguide_workflows_created_at", table_name="cityguide_workflows")
