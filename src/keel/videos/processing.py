"""The HLS job behind `video.uploaded`, and the reaper for jobs that died.

State lives on the row: `processing` (with `attempts` and `processing_started_at`) is committed at
the start of each try, on its own, so readers see it and a crash leaves a trace. The outcome
(`ready`) commits in the consumer's unit of work together with its inbox row. A failed try records
its reason and raises, so the consumer runner retries with backoff; the try that uses up the last
attempt, or that meets a permanent failure (a refused host, a 4xx, a file ffmpeg cannot read: no retry
would change the answer), marks the row `failed` and raises `PoisonMessage`, which the runner
dead-letters at once (to `videos.dlq`) — so the row is `failed` exactly when its message goes to the
DLQ, whatever the runner's in-memory attempt count (it restarts at zero with the process; the row's
does not). `POST /api/videos/{id}/retry` puts a failed row back to `pending` with a new event.

Without a source to fetch (HLS_MODE=generated) the job makes its own clip (keel.videos.clip).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from keel.core.cache import Cache
from keel.core.db import Database, UnitOfWork
from keel.core.events import Event, PoisonMessage
from keel.core.faults import crash_point
from keel.core.storage import ObjectStore
from keel.videos import clip, hls, repository
from keel.videos.failures import ABANDONED, failure, is_permanent
from keel.videos.service import cache_key, now_utc

log = logging.getLogger("keel.videos.processing")

MAX_ERROR_CHARS = 500  # of the reason logged and dead-lettered; the row keeps the public one


class Downloader(Protocol):
    async def download(self, url: str, dest: Path) -> int:
        """Write the resource at `url` to `dest` (guarded, size and time capped); bytes written."""
        ...


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR_CHARS]


class HlsJob:
    """Handles `video.uploaded` as a `Transactional` handler: `await job(event, uow)`."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        storage: ObjectStore,
        *,
        max_attempts: int,
        ffmpeg: Callable[[], str],
        mode: str = "generated",
        downloader: Downloader | None = None,
        ffmpeg_timeout_s: float = 300.0,
        font: Path | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        """`ffmpeg` finds the binary (called per job, so a missing one fails the job, not the start);
        `font`: the title's font in generated mode (None: clips without a title)."""
        if mode == "ffmpeg" and downloader is None:
            raise ValueError("ffmpeg mode needs a downloader")
        self.db = db
        self.cache = cache
        self.storage = storage
        self.max_attempts = max_attempts
        self.mode = mode
        self.downloader = downloader
        self.ffmpeg = ffmpeg
        self.ffmpeg_timeout_s = ffmpeg_timeout_s
        self.font = font
        self.clock = clock

    async def __call__(self, event: Event, uow: UnitOfWork) -> None:
        try:
            video_id = int(event.payload["video_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PoisonMessage(f"video.uploaded without a valid video_id: {exc!r}") from None
        started = await self._start(video_id)
        if started is None:
            log.info("video %s is not waiting for processing (done, failed or unknown); skipped", video_id)
            return
        attempt, url, title = started
        if attempt > self.max_attempts:
            # Only starts that never finished get here (each failure that finishes is counted and
            # bounded below): a job that kills its process every time must not loop forever.
            public = ABANDONED.format(attempts=attempt - 1)
            await self._fail(video_id, public, public)
            raise PoisonMessage(f"video {video_id}: {public} (worker died each time)")
        log.info(
            "video %s: HLS job started (attempt %d of %d, mode %s)",
            video_id,
            attempt,
            self.max_attempts,
            self.mode,
        )
        crash_point("videos.after_processing_marked")
        try:
            await self._generate(video_id, url, title)
        except Exception as exc:
            reason = _reason(exc)
            if is_permanent(exc):
                await self._fail(video_id, failure(exc), reason)
                raise PoisonMessage(f"video {video_id} failed for good: {reason}") from exc
            if attempt >= self.max_attempts:
                await self._fail(video_id, failure(exc), reason)
                raise PoisonMessage(f"video {video_id} failed after {attempt} attempts: {reason}") from exc
            await self._record_error(video_id, failure(exc))
            log.warning("video %s: attempt %d failed: %s", video_id, attempt, reason)
            raise
        conn = await uow.raw()
        if await conn.fetchval(repository.READY, video_id, self.clock()) is not None:
            uow.after_commit(lambda: self.cache.delete(cache_key(video_id)))
            log.info("video %s is ready", video_id)

    async def _start(self, video_id: int) -> tuple[int, str, str] | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(repository.START, video_id, self.clock())
        if row is None:
            return None
        await self.cache.delete(cache_key(video_id))
        return int(row["attempts"]), str(row["original_url"]), str(row["title"])

    async def _record_error(self, video_id: int, reason: str) -> None:
        async with self.db.connection() as conn:
            await conn.execute(repository.RECORD_ERROR, video_id, reason, self.clock())
        await self.cache.delete(cache_key(video_id))

    async def _fail(self, video_id: int, public: str, reason: str) -> None:
        """`public` goes on the row (callers read it); `reason`, with the details, to the log only."""
        async with self.db.connection() as conn:
            await conn.execute(repository.FAIL, video_id, public, self.clock())
        await self.cache.delete(cache_key(video_id))
        log.error("video %s failed: %s", video_id, reason)

    async def _generate(self, video_id: int, url: str, title: str) -> None:
        with tempfile.TemporaryDirectory(prefix=f"keel-video-{video_id}-") as tmp:
            work = Path(tmp)
            out = work / "hls"
            out.mkdir()
            if self.mode == "ffmpeg":
                assert self.downloader is not None  # checked in __init__
                source = work / "source"
                size = await self.downloader.download(url, source)
                log.info("video %s: downloaded %d bytes", video_id, size)
                await hls.segment_with_ffmpeg(self.ffmpeg(), source, out, video_id, self.ffmpeg_timeout_s)
            else:
                output = hls.hls_output(out, video_id)
                await clip.make_clip(
                    self.ffmpeg(), title, work, output, font=self.font, timeout_s=self.ffmpeg_timeout_s
                )
            count = await hls.upload_dir(self.storage, out, video_id)
            log.info("video %s: %d HLS segments stored", video_id, count)
