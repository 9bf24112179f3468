"""How the platform wires the video service: routes, the HLS consumer, the reaper."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from keel.core.cache import Cache
from keel.core.consumer import ConsumerRunner, RetryPolicy, Transactional
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring
from keel.videos.api import build_router
from keel.videos.fetch import AddressGuard
from keel.videos.processing import HlsJob
from keel.videos.reaper import StuckJobReaper
from keel.videos.service import VideoService
from keel.videos.settings import VideoSettings

DESCRIPTION = """Videos (seed 003).

* `POST /api/videos` `{"title", "url"}` → 201 `{"id", "title", "playlist_url"}`; 409 when a video with
  that url exists; 422 with field details for a bad body (title 1..255 after trimming; url absolute
  http(s), at most 2048 characters, no credentials, not a non-public address or host name: the
  worker's SSRF policy). Ids are integers.
* `GET /api/videos/{id}` → the video with `status` (pending, processing, ready, failed) and `error`;
  cached in Redis and invalidated on every change; `X-Cache: hit|miss`.
* `video.uploaded` goes through the outbox to `videos.events` (envelope, key = id); the `videos-hls`
  consumer makes the HLS (`HLS_MODE=generated|ffmpeg`), retries with backoff, then dead-letters to
  `videos.dlq` and marks the video `failed` with a short code and a safe message in `error`
  (`source_refused`, `source_http_error`, `source_too_large`, `transcode_failed`, ...).
* HLS: `/hls/{id}.m3u8` and its segments `/hls/{id}/{n}.ts`.
"""


def build_spec(settings: VideoSettings | None = None) -> ServiceSpec:
    """The service on these settings (tests pass their own topics and group)."""
    chosen = settings or VideoSettings()

    async def wire(infra: Infra) -> Wiring:
        db = infra.require_db()
        cache = infra.cache(chosen.cache_name)
        retry = RetryPolicy.from_settings(infra.settings)
        service = VideoService(
            db,
            cache,
            infra.storage,
            infra.outbox,
            topic=chosen.topic,
            base_url=infra.settings.public_base_url,
            cache_ttl_s=chosen.cache_ttl_s,
            source_guard=AddressGuard(chosen.fetch_allow_hosts),
        )
        job = build_job(infra, cache, chosen, retry.max_attempts)
        consumer = ConsumerRunner(
            infra.bus,
            group_id=chosen.group_id,
            topics=[chosen.topic],
            wire="envelope",
            handler=Transactional(job),
            db=db,
            dlq_topic=chosen.dlq_topic,
            retry=retry,
            # HLS jobs are heavy: a few at a time, whatever the number of partitions owned.
            concurrency=4,
        )
        reaper = StuckJobReaper(
            db,
            cache,
            infra.outbox,
            topic=chosen.topic,
            timeout_s=chosen.processing_timeout_s,
            max_attempts=retry.max_attempts,
            interval_s=chosen.reaper_interval_s,
        )
        return Wiring(state={"videos": service}, workers=[consumer, reaper])

    def routers() -> Sequence[APIRouter]:
        return [build_router()]

    return ServiceSpec(
        name="videos",
        title="Video service",
        routers=routers,
        wire=wire,
        topics=(chosen.topic, chosen.dlq_topic),
        uses_outbox=True,
        description=DESCRIPTION,
    )


def build_job(infra: Infra, cache: Cache, settings: VideoSettings, max_attempts: int) -> HlsJob:
    """The HLS job; `cache` is the service's own instance (an in-process cache is per instance)."""
    db = infra.require_db()
    if settings.hls_mode != "ffmpeg":
        return HlsJob(db, cache, infra.storage, max_attempts=max_attempts)
    import imageio_ffmpeg  # type: ignore[import-untyped]

    from keel.videos.fetch import GuardedFetcher

    fetcher = GuardedFetcher(
        allow_hosts=settings.fetch_allow_hosts,
        max_bytes=settings.fetch_max_bytes,
        timeout_s=settings.fetch_timeout_s,
    )
    return HlsJob(
        db,
        cache,
        infra.storage,
        max_attempts=max_attempts,
        mode="ffmpeg",
        downloader=fetcher,
        ffmpeg=imageio_ffmpeg.get_ffmpeg_exe,
        ffmpeg_timeout_s=settings.ffmpeg_timeout_s,
    )


SPEC = build_spec()
