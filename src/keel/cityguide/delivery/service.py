"""Delivery prefetch use cases: remember ready audio per route, hand out signed CDN links, and the
CDN-side check of those links before the bytes are served."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import orjson

from keel.cityguide.audio import audio_key, cdn_path, is_audio_id
from keel.cityguide.delivery.store import ReadyAudio, ReadyAudioStore, UnknownAudio
from keel.cityguide.events import keyed_audio_id, optional_float, optional_int, text_field
from keel.core.cache.recent import RecentPages
from keel.core.errors import NotFound
from keel.core.events import Event, PoisonMessage
from keel.core.link_guard import LinkGuard
from keel.core.signing import UrlSigner
from keel.core.storage import ObjectStore

log = logging.getLogger("keel.cityguide.delivery")

# Audio without a story position (an outside producer) sorts after every positioned one.
UNPOSITIONED = 1_000_000.0


class DeliveryService:
    def __init__(
        self,
        store: ReadyAudioStore,
        signer: UrlSigner,
        objects: ObjectStore,
        *,
        link_ttl_s: int,
        base_url: str = "",
        recent_pages: RecentPages | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._objects = objects
        self._link_ttl_s = link_ttl_s
        self._base_url = base_url
        # Pages served a moment ago (PREFETCH_PAGE_CACHE_SEC; None: every page from the store). A page
        # handed out up to that long after it was signed still promises `ttl` seconds: links are
        # signed for the difference more.
        self._recent = recent_pages
        hold_s = recent_pages.ttl_s if recent_pages is not None else 0.0
        self._sign_ttl_s = link_ttl_s + math.ceil(hold_s)
        signer.allow_ttl(self._sign_ttl_s)

    async def on_tts_completed(self, events: Sequence[Event]) -> None:
        """Ready audio joins its route's list, a fetched batch in one store round trip; a repeat
        overwrites (the key is the audio id)."""
        ready = [item for item in map(_ready, events) if item is not None]
        await self._store.put_many(ready)
        if self._recent is not None:
            for route_id in {route_id for route_id, _ in ready}:
                self._recent.forget(route_id)  # after the write: a page loaded meanwhile is not kept

    def recent_page(self, route_id: str, count: int, after: str | None) -> bytes | None:
        """The page if this process served it a moment ago, without any I/O."""
        return None if self._recent is None else self._recent.get(route_id, _page(count, after))

    async def prefetch(self, route_id: str, count: int, after: str | None) -> bytes:
        """Up to `count` ready audio after `after`, each with a signed link: a `Prefetch` as JSON.

        Dumped straight from dicts with orjson: building and dumping the pydantic models cost more on a
        ten-link page (bench/results/changes.md); the models stay the documented shape (tests check
        the bytes)."""
        recent = self._recent
        if recent is None:
            return await self._load(route_id, count, after)
        page = _page(count, after)
        body = recent.get(route_id, page)
        if body is None:
            version = recent.version(route_id)
            body = await self._load(route_id, count, after)
            recent.put(route_id, page, body, version)
        return body

    async def _load(self, route_id: str, count: int, after: str | None) -> bytes:
        try:
            ready = await self._store.next(route_id, count, after)
        except UnknownAudio:
            raise NotFound(f"audio {after!r} is not in the ready list of route {route_id!r}") from None
        ttl = self._link_ttl_s
        urls = self._signer.sign_urls([cdn_path(a.audio_id) for a in ready], self._sign_ttl_s, self._base_url)
        items = [
            {
                "audio_id": a.audio_id,
                "story_id": a.story_id,
                "url": url,
                "ttl": ttl,
                "duration_s": a.duration_s,
            }
            for a, url in zip(ready, urls, strict=True)
        ]
        return orjson.dumps({"route_id": route_id, "items": items})

    @property
    def objects(self) -> ObjectStore:
        return self._objects

    async def verified_audio_key(
        self, audio_id: str, exp: str, sig: str, kid: str | None, guard: LinkGuard
    ) -> str:
        """What a CDN edge does before it serves: check the link (403 forged or malformed, 410
        expired, 429 for a client that keeps failing); the object key of the audio to serve."""
        await guard.verify(self._signer, cdn_path(audio_id), exp, sig, kid)
        if not is_audio_id(audio_id):
            raise NotFound("no such audio")
        return audio_key(audio_id)


def _ready(event: Event) -> tuple[str, ReadyAudio] | None:
    """(route_id, audio) of a completed result; None for a failed one (nothing to deliver)."""
    payload = event.payload
    if payload.get("status", "completed") != "completed":
        return None
    audio_id = keyed_audio_id(event.key, payload)
    if not is_audio_id(audio_id):
        raise PoisonMessage(f"tts.completed has no usable audio id: {audio_id[:40]!r}")
    position = optional_int(payload, "position")
    audio = ReadyAudio(
        audio_id=audio_id,
        story_id=text_field(payload, "story_id"),
        position=float(position) if position is not None else UNPOSITIONED,
        duration_s=optional_float(payload, "duration_s"),
    )
    return text_field(payload, "route_id"), audio


def _page(count: int, after: str | None) -> str:
    return f"{count}" if after is None else f"{count}:{after}"
