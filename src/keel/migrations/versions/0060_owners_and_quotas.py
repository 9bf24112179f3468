"""video owners; attachment bytes per user

Revision ID: 0060
Revises: 0052
Create Date: 2026-12-02 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0060"
down_revision: str | None = "0052"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for the rows registered before owners existed: only operators read those (docs/security.md).
    op.add_column("videos", sa.Column("owner", sa.Text(), nullable=True))
    # The per-user attachment quota sums a user's bytes on every upload.
    op.create_index("ix_attachments_uploaded_by", "attachments", ["uploaded_by"])


def downgrade() -> None:
    op.drop_index("ix_attachments_uploaded_by", table_name="attachments")
    op.drop_column("videos", "owner")
