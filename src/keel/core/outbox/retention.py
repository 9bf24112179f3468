"""Retention: delete published outbox rows once they are older than the configured age.

Deleted in batches, each its own short transaction, so a large purge never holds many row locks or
one long transaction that would stall vacuum; unpublished rows are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from keel.core.db import Database
from keel.core.outbox import sql

log = logging.getLogger("keel.outbox")


async def purge_published(db: Database, *, older_than_s: float, batch_size: int = 5_000) -> int:
    """Delete rows published more than `older_than_s` ago; the number deleted."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    total = 0
    while True:
        async with db.unit_of_work() as uow:
            conn = await uow.raw()
            status: str = await conn.execute(sql.PURGE, float(older_than_s), batch_size)
            await uow.commit()
        deleted = int(status.rsplit(" ", 1)[-1])
        total += deleted
        if deleted < batch_size:
            return total


class OutboxRetention:
    """A background worker that purges every `interval_s` (the first time at start)."""

    def __init__(
        self,
        db: Database,
        *,
        max_age_s: float,
        interval_s: float = 3600.0,
        batch_size: int = 5_000,
        name: str = "outbox-retention",
    ) -> None:
        self.name = name
        self._db = db
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
                deleted = await purge_published(
                    self._db, older_than_s=self._max_age_s, batch_size=self._batch_size
                )
            except Exception as exc:
                # The next round tries again; published rows only cost disk space meanwhile.
                log.warning(
                    "outbox retention %s failed, retrying in %.0fs: %r", self.name, self._interval_s, exc
                )
            else:
                self.deleted += deleted
                if deleted:
                    log.info("outbox retention %s deleted %d published rows", self.name, deleted)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
