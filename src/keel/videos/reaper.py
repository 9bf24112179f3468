"""Takes back videos whose HLS job died: a row in `processing` for longer than the timeout goes back
to `pending` with a fresh `video.uploaded` (while it has attempts left) or becomes `failed`.

Redelivery of the uncommitted message already restarts a crashed job; the reaper covers what
redelivery cannot (the message was dead-lettered or committed while the row stayed behind)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from keel.core.cache import Cache
from keel.core.db import Database
from keel.core.outbox import Outbox
from keel.videos import repository
from keel.videos.failures import PROCESSING_TIMEOUT
from keel.videos.service import cache_key, now_utc, uploaded

log = logging.getLogger("keel.videos.reaper")


class StuckJobReaper:
    def __init__(
        self,
        db: Database,
        cache: Cache,
        outbox: Outbox,
        *,
        topic: str,
        timeout_s: float,
        max_attempts: int,
        interval_s: float = 30.0,
        batch_size: int = 100,
        clock: Callable[[], datetime] = now_utc,
        name: str = "videos-reaper",
    ) -> None:
        self.name = name
        self.db = db
        self.cache = cache
        self.outbox = outbox
        self.topic = topic
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.clock = clock
        self._stop = asyncio.Event()

    async def reap_once(self) -> tuple[list[int], list[int]]:
        """One pass: (requeued ids, failed ids)."""
        now = self.clock()
        requeued: list[int] = []
        failed: list[int] = []
        reason = PROCESSING_TIMEOUT.format(timeout=f"{self.timeout_s:g}s")
        async with self.db.unit_of_work() as uow:
            conn = await uow.raw()
            rows = await conn.fetch(
                repository.STUCK, now - timedelta(seconds=self.timeout_s), self.batch_size
            )
            for row in rows:
                video_id = int(row["id"])
                if row["attempts"] >= self.max_attempts:
                    await conn.execute(repository.FAIL, video_id, reason, now)
                    failed.append(video_id)
                    continue
                await conn.execute(repository.REQUEUE, video_id, reason, now)
                await self.outbox.add(uow, uploaded(video_id, row["title"], row["original_url"]), self.topic)
                requeued.append(video_id)
            await uow.commit()
        touched = requeued + failed
        if touched:
            await self.cache.delete(*(cache_key(v) for v in touched))
            log.warning("reaper: requeued %s, failed %s (stuck in processing)", requeued, failed)
        return requeued, failed

    async def run(self) -> None:
        self._stop.clear()
        while not self._stop.is_set():
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper pass failed; trying again next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def stop(self) -> None:
        self._stop.set()
