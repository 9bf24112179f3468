"""Video use cases for the API: create and retry (row + `video.uploaded` in one transaction), cached
reads, and the HLS files. Every dependency comes in through the constructor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from keel.core.cache import Cache
from keel.core.db import Database
from keel.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from keel.core.events import Event, dumps
from keel.core.identity import OPERATOR, Identity
from keel.core.outbox import Outbox
from keel.core.storage import ObjectNotFound, ObjectStore, StoredObject
from keel.videos import hls, repository
from keel.videos.failures import public_error
from keel.videos.fetch import AddressGuard, SourceRefused
from keel.videos.schemas import VideoCreate, VideoEvents


def now_utc() -> datetime:
    return datetime.now(UTC)


def cache_key(video_id: int) -> str:
    return f"videos:{video_id}"


def without_credentials(url: str) -> str:
    """The URL with any `user:pass@` removed (rows from before registration refused them)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def playlist_url(base_url: str, video_id: int) -> str:
    return f"{base_url.rstrip('/')}/hls/{video_id}.m3u8"


def uploaded(video_id: int, title: str, url: str, at: datetime | None = None) -> Event:
    """The event that asks the worker to make a video's HLS (on registration, retry and requeue)."""
    payload = {"video_id": video_id, "title": title, "url": url}
    return Event(VideoEvents.UPLOADED, payload, key=str(video_id), created_at=at or now_utc())


def check_owner(owner: str | None, caller: Identity) -> None:
    """The owner and operators pass; a video from before owners (None) is the operators' alone."""
    if caller.user != owner and not caller.has(OPERATOR):
        raise Forbidden("this video belongs to another user")


@dataclass(frozen=True, slots=True)
class Read:
    body: bytes
    cache_hit: bool


class VideoService:
    def __init__(
        self,
        db: Database,
        cache: Cache,
        storage: ObjectStore,
        outbox: Outbox,
        *,
        topic: str,
        base_url: str = "",
        cache_ttl_s: float = 300.0,
        source_guard: AddressGuard | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        """`source_guard`: the worker's SSRF policy, applied at registration without network I/O."""
        self.db = db
        self.cache = cache
        self.storage = storage
        self.outbox = outbox
        self.topic = topic
        self.base_url = base_url
        self.cache_ttl_s = cache_ttl_s
        self.source_guard = source_guard or AddressGuard()
        self.clock = clock

    def _check_source(self, url: str) -> None:
        """422 for a URL the worker would refuse, decided from the URL alone: names that need DNS
        to judge are left to the worker, which resolves them once and checks every answer."""
        try:
            self.source_guard.check(httpx.URL(url))
        except (SourceRefused, httpx.InvalidURL) as exc:
            detail = {"field": "body.url", "message": str(exc), "type": "source_refused"}
            raise Unprocessable("url is not an allowed video source", details=[detail]) from None

    async def create(self, data: VideoCreate, owner: str) -> dict[str, Any]:
        url = str(data.url)
        self._check_source(url)
        now = self.clock()
        async with self.db.unit_of_work() as uow:
            conn = await uow.raw()
            video_id = await conn.fetchval(repository.INSERT, data.title, url, now, owner)
            if video_id is None:
                raise Conflict("a video with this url already exists")
            await self.outbox.add(uow, uploaded(video_id, data.title, url, now), self.topic)
            await uow.commit()
        return {"id": video_id, "title": data.title, "playlist_url": playlist_url(self.base_url, video_id)}

    async def retry(self, video_id: int, caller: Identity) -> dict[str, Any]:
        """A failed video back to `pending` with a fresh `video.uploaded`: the worker takes it up as it
        does a new one, with a new round of attempts. 409 unless the video is `failed`."""
        now = self.clock()
        async with self.db.unit_of_work() as uow:
            conn = await uow.raw()
            owner = await conn.fetchval(repository.OWNER, video_id)
            if owner is None and await conn.fetchval(repository.STATUS, video_id) is None:
                raise NotFound("video not found")
            check_owner(owner, caller)
            row = await conn.fetchrow(repository.RETRY, video_id, now)
            if row is None:
                status = await conn.fetchval(repository.STATUS, video_id)
                if status is None:
                    raise NotFound("video not found")
                raise Conflict(f"the video is {status}; only a failed video can be retried")
            await self.outbox.add(uow, uploaded(video_id, row["title"], row["original_url"], now), self.topic)
            uow.after_commit(lambda: self.cache.delete(cache_key(video_id)))
            await uow.commit()
        return self._json(row)

    async def get(self, video_id: int, caller: Identity) -> Read:
        """The video as JSON bytes, through the cache; `cache_hit` says whether the loader ran. Its
        owner's (or an operator's) only: 403 for another caller, as a ticket is."""
        loaded = False

        async def load() -> bytes:
            nonlocal loaded
            loaded = True
            async with self.db.connection() as conn:
                row = await conn.fetchrow(repository.GET, video_id)
            if row is None:
                raise NotFound("video not found")
            return dumps(self._json(row))

        body = await self.cache.get_or_load(cache_key(video_id), load, self.cache_ttl_s)
        check_owner(orjson.loads(body).get("owner"), caller)
        return Read(body, cache_hit=not loaded)

    def _json(self, row: Any) -> dict[str, Any]:
        return {
            "id": row["id"],
            "title": row["title"],
            "original_url": without_credentials(row["original_url"]),
            "owner": row["owner"],
            "playlist_url": playlist_url(self.base_url, row["id"]),
            "status": row["status"],
            "error": public_error(row["error"]),
            "attempts": row["attempts"],
            "retries": row["retries"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }

    async def playlist(self, video_id: int) -> bytes:
        try:
            return await self.storage.get(hls.playlist_key(video_id))
        except ObjectNotFound:
            raise NotFound("no playlist for this video (unknown, or not processed yet)") from None

    async def segment(self, video_id: int, name: str) -> tuple[StoredObject, AsyncIterator[bytes]]:
        if not hls.SEGMENT_NAME.match(name):
            raise NotFound("segment not found")
        try:
            return await self.storage.stream(hls.segment_key(video_id, name))
        except ObjectNotFound:
            raise NotFound("segment not found") from None
