"""attachment bytes per user kept as a running total

Revision ID: 0081
Revises: 0080
Create Date: 2026-12-04 23:40:00.000000

The per-user attachment quota summed every attachment the user had ever uploaded, on every upload:
a cost that grew with the user's history (bench/results/changes.md has the figures). A trigger on
`attachments` now keeps each user's total in `attachment_usage`, whatever writes or deletes the rows
(an upload, a ticket deleted with its attachments by the foreign key's cascade, an operator's DELETE),
and the quota reads one row.

The table is filled from the attachments already stored in the same transaction as the trigger is
created, with writes to `attachments` held off meanwhile, so no upload is counted twice or missed.
The expand half of expand/contract: `ix_attachments_uploaded_by` stays while API processes of the
previous release, which still sum, may run beside the new ones during a rollout.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0081"
down_revision: str | None = "0080"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNT = """
CREATE FUNCTION attachment_usage_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE attachment_usage SET bytes = bytes - OLD.size_bytes WHERE user_id = OLD.uploaded_by;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO attachment_usage AS u (user_id, bytes) VALUES (NEW.uploaded_by, NEW.size_bytes)
        ON CONFLICT (user_id) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "attachment_usage",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_attachment_usage")),
    )
    # Uploads wait here until the trigger and the totals are both in place (reads go on).
    op.execute("LOCK TABLE attachments IN SHARE ROW EXCLUSIVE MODE")
    op.execute(_COUNT)
    op.execute(
        "CREATE TRIGGER attachments_count_usage AFTER INSERT OR DELETE OR UPDATE OF uploaded_by, size_bytes "
        "ON attachments FOR EACH ROW EXECUTE FUNCTION attachment_usage_count()"
    )
    op.execute(
        "INSERT INTO attachment_usage (user_id, bytes) "
        "SELECT uploaded_by, sum(size_bytes) FROM attachments GROUP BY uploaded_by"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER attachments_count_usage ON attachments")
    op.execute("DROP FUNCTION attachment_usage_count()")
    op.drop_table("attachment_usage")
