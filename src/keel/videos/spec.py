"""How the platform wires the video service: routes, the HLS consumer, the reaper."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from keel.core.cache import Cache
from keel.core.consumer import ConsumerOptions, ConsumerRunner, RetryPolicy, Transactional
from keel.core.infra import Infra
from keel.core.ratelimit import ClientLimits, RateLimiter, shared_storage
from keel.core.service import ServiceSpec, Wiring
from keel.videos.api import build_router
from keel.videos.clip import find_font
from keel.videos.fetch import AddressGuard, GuardedFetcher
from keel.videos.processing import HlsJob
from keel.videos.reaper import StuckJobReaper
from keel.videos.service import VideoService
from keel.videos.settings import VideoSettings

TITLE = "Video service"
DESCRIPTION = """Videos (seed 003).

* `POST /api/videos` `{"title", "url"}` → 201 `{"id", "title", "playlist_url"}`; 409 when a video with
  that url exists; 422 with field details for a bad body (title 1..255 after trimming; url absolute
  http(s), at most 2048 characters, no credentials, not a non-public address or host name: the
  worker's SSRF policy). Ids are integers.
* Callers: every `/api/videos` route needs an authenticated caller; the creator owns the video, and
  reads and retries are the owner's (or an operator's): 403 for anyone else. Creates are limited per
  user (`VIDEO_CREATE_LIMIT`), per address (`VIDEO_CREATE_ADDRESS_LIMIT`) and by a quota of
  `VIDEOS_PER_USER_PER_HOUR`: 429 with `Retry-After`. The HLS files are public by video id.
* `GET /api/videos/{id}` → the video with `status` (pending, processing, ready, failed) and `error`;
  cached in Redis and invalidated on every change; `X-Cache: hit|miss`.
* `video.uploaded` goes through the outbox to `videos.events` (envelope, key = id); the `videos-hls`
  consumer makes the HLS: `HLS_MODE=generated` (default) a 4 s test clip with the title and a tone,
  `HLS_MODE=ffmpeg` the source downloaded and segmented. Transient failures (5xx, timeouts) are retried
  with backoff; permanent ones (a refused host, a 4xx, a file that is not a video) and the last retry
  dead-letter to `videos.dlq` and mark the video `failed` with a short code and a safe message in
  `error` (`source_refused`, `source_http_error`, `source_too_large`, `transcode_failed`, `transcode_timeout`, ...).
* `POST /api/videos/{id}/retry` → 202 with the video back in `pending` (a new round of `attempts`,
  `retries` + 1), processed again through the same event; 409 unless it is `failed`; 404 unknown.
* HLS: `/hls/{id}.m3u8` and its segments `/hls/{id}/{n}.ts` (H.264 + AAC in MPEG-TS).
"""


def build_spec(settings: VideoSettings | None = None) -> ServiceSpec:
    """The service on `settings`, read once per process by `SPEC.configured()` unless given (tests
    pass their own topics and group)."""
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
            # HLS jobs are heavy: a few at a time, whatever the number of partitions owned.
            options=ConsumerOptions(retry=retry, concurrency=4),
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
        storage = shared_storage(infra.settings)
        limits = ClientLimits(
            "video-creates", storage, per_address=chosen.create_address_limit, per_user=chosen.create_limit
        )
        hourly = chosen.videos_per_user_per_hour
        quota = RateLimiter(f"{hourly}/hour", storage, name="video-quota") if hourly else None
        state = {"videos": service, "video_create_limits": limits, "video_hourly_quota": quota}
        return Wiring(state=state, workers=[consumer, reaper])

    def routers() -> Sequence[APIRouter]:
        return [build_router()]

    return ServiceSpec(
        name="videos",
        title=TITLE,
        routers=routers,
        wire=wire,
        topics=(chosen.topic, chosen.dlq_topic),
        uses_outbox=True,
        description=DESCRIPTION,
    )


def build_job(infra: Infra, cache: Cache, settings: VideoSettings, max_attempts: int) -> HlsJob:
    """The HLS job; `cache` is the service's own instance (an in-process cache is per instance)."""
    import imageio_ffmpeg  # type: ignore[import-untyped]

    fetcher = None
    if settings.hls_mode == "ffmpeg":
        fetcher = GuardedFetcher(
            allow_hosts=settings.fetch_allow_hosts,
            max_bytes=settings.fetch_max_bytes,
            timeout_s=settings.fetch_timeout_s,
        )
    return HlsJob(
        infra.require_db(),
        cache,
        infra.storage,
        max_attempts=max_attempts,
        ffmpeg=imageio_ffmpeg.get_ffmpeg_exe,
        mode=settings.hls_mode,
        downloader=fetcher,
        ffmpeg_timeout_s=settings.ffmpeg_timeout_s,
        font=find_font(settings.title_font) if settings.hls_mode != "ffmpeg" else None,
    )


# Only a name until a process is built from it: the settings are read then, once (ServiceSpec.configured).
SPEC = ServiceSpec.deferred("videos", TITLE, build_spec)
