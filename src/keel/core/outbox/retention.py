"""Retention: delete published outbox rows once they are older than the configured age; unpublished
rows are never touched."""

from __future__ import annotations

from keel.core.db import Database
from keel.core.outbox import sql
from keel.core.retention import RetentionJob, purge


async def purge_published(db: Database, *, older_than_s: float, batch_size: int = 5_000) -> int:
    """Delete rows published more than `older_than_s` ago; the number deleted."""
    return await purge(db, sql.PURGE, older_than_s=older_than_s, batch_size=batch_size)


class OutboxRetention(RetentionJob):
    def __init__(
        self,
        db: Database,
        *,
        max_age_s: float,
        interval_s: float = 3600.0,
        batch_size: int = 5_000,
        name: str = "outbox-retention",
    ) -> None:
        super().__init__(
            db,
            sql.PURGE,
            what="published outbox rows",
            max_age_s=max_age_s,
            interval_s=interval_s,
            batch_size=batch_size,
            name=name,
        )
