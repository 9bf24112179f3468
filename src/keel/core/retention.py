"""Retention jobs: delete rows past their useful life in batches, each its own short transaction, so
a large purge never holds many row locks or one long transaction that would stall vacuum."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from keel.core.db import Database

log = logging.getLogger("keel.retention")

# The inbox must remember an event for as long as the broker could deliver it again: keep it at least
# as long as the topics' retention (Kafka's default is 7 days).
# Both halves on an index whatever the table's size: the batch, oldest first, through the index on
# processed_at (`now()`, the batch's own transaction start: `clock_timestamp()` is volatile and cannot
# be an index condition, so every batch read the table in physical order); the delete by the rows'
# ctids (rows here are inserted and deleted, never updated; the batch holds their locks). With
# `(consumer, event_id) IN (...)` the planner hashed the batch and read the whole table for each one
# (bench/results/changes.md has the figures).
INBOX_PURGE = """
DELETE FROM processed_events
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM processed_events
    WHERE processed_at < now() - make_interval(secs => $1)
    ORDER BY processed_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
"""


async def purge(db: Database, statement: str, *, older_than_s: float, batch_size: int = 5_000) -> int:
    """Run a `DELETE ... $1 = age in seconds, $2 = batch size` statement until a batch comes back short."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    total = 0
    while True:
        async with db.unit_of_work() as uow:
            conn = await uow.raw()
            status: str = await conn.execute(statement, float(older_than_s), batch_size)
            await uow.commit()
        deleted = int(status.rsplit(" ", 1)[-1])
        total += deleted
        if deleted < batch_size:
            return total


class RetentionJob:
    """A background worker that purges every `interval_s` (the first time at start)."""

    def __init__(
        self,
        db: Database,
        statement: str,
        *,
        what: str,
        max_age_s: float,
        interval_s: float = 3600.0,
        batch_size: int = 5_000,
        name: str,
    ) -> None:
        self.name = name
        self._db = db
        self._statement = statement
        self._what = what
        self._max_age_s = max_age_s
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._stopped = asyncio.Event()
        # Rows this worker has deleted since it started.
        self.deleted = 0

    async def run(self) -> None:
        self._stopped.clear()
        while not self._stopped.is_set():
            try:
                deleted = await purge(
                    self._db, self._statement, older_than_s=self._max_age_s, batch_size=self._batch_size
                )
            except Exception as exc:
                # The next round tries again; old rows only cost disk space meanwhile.
                log.warning("%s failed, retrying in %.0fs: %r", self.name, self._interval_s, exc)
            else:
                self.deleted += deleted
                if deleted:
                    log.info("%s deleted %d %s", self.name, deleted, self._what)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()


class InboxRetention(RetentionJob):
    def __init__(
        self, db: Database, *, max_age_s: float, interval_s: float = 3600.0, batch_size: int = 5_000
    ) -> None:
        super().__init__(
            db,
            INBOX_PURGE,
            what="handled-event records",
            max_age_s=max_age_s,
            interval_s=interval_s,
            batch_size=batch_size,
            name="inbox-retention",
        )
