"""How the platform wires delivery prefetch: routes, the ready-audio store and (when it has a feed) its consumer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter

from keel.cityguide import topics
from keel.cityguide.delivery.api import build_router, prefetch_fast_route
from keel.cityguide.delivery.service import DeliveryService
from keel.cityguide.delivery.settings import DeliverySettings
from keel.cityguide.delivery.store import MemoryReadyAudioStore, ReadyAudioStore, RedisReadyAudioStore
from keel.core.cache.recent import RecentPages
from keel.core.consumer import ConsumerOptions, ConsumerRunner, IdempotentBatch
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring

GROUP = "delivery-prefetch"
log = logging.getLogger("keel.cityguide.delivery")

DESCRIPTION = """Cityguide delivery prefetch (seed 000): ready audio per route, handed out as signed CDN links.

* Consumes `tts.completed` (key = audio id; a repeat overwrites, never duplicates) into a short-lived
  list per route in story order: Redis when `REDIS_URL` is set, in-process otherwise (`PREFETCH_TTL_SEC`).
* `GET /delivery/prefetch?route_id=&next=&after=` (any authenticated caller: a route carries no user,
  its id is the capability): up to `next` (1..50, default 3) audio after `after`,
  each with a link signed for `LINK_TTL_SEC` with `SECRET` (8 base64url characters = 48 bits). A page
  polled again within `PREFETCH_PAGE_CACHE_SEC` (1 s) is answered from memory.
* `GET /cdn/audio/{audio_id}?exp=&sig=&kid=`: the CDN-side check — 403 bad signature, 410 expired.
* Without `KAFKA_BROKERS` a lone `keel serve delivery-prefetch` runs no consumer (and says so);
  under `keel up` the in-process bus feeds it.
"""


def routers() -> Sequence[APIRouter]:
    return [build_router()]


def _store(infra: Infra, settings: DeliverySettings) -> ReadyAudioStore:
    if infra.redis is not None:
        return RedisReadyAudioStore(infra.redis, settings.prefetch_ttl_s, prefix=settings.redis_key_prefix)
    return MemoryReadyAudioStore(settings.prefetch_ttl_s)


async def wire(infra: Infra) -> Wiring:
    settings = DeliverySettings()
    s = infra.settings
    service = DeliveryService(
        _store(infra, settings),
        infra.signer,
        infra.storage,
        link_ttl_s=s.link_ttl_sec,
        base_url=s.public_base_url,
        recent_pages=RecentPages("delivery-pages", settings.page_cache_s) if settings.page_cache_s else None,
    )
    wiring = Wiring(
        state={"delivery": service}, fast_routes=[prefetch_fast_route(service, infra.authenticator)]
    )
    if not s.uses_kafka and not infra.embedded:
        log.warning("KAFKA_BROKERS is not set: delivery-prefetch runs without a tts.completed consumer")
        return wiring
    wiring.workers.append(
        ConsumerRunner(
            infra.bus,
            group_id=GROUP,
            topics=[topics.TTS_COMPLETED],
            wire="bare",
            handler=IdempotentBatch(service.on_tts_completed),
            dlq_topic=topics.DLQ,
            default_event_type=topics.TTS_COMPLETED,
            options=ConsumerOptions.from_settings(s),
        )
    )
    return wiring


SPEC = ServiceSpec(
    name="delivery-prefetch",
    title="Cityguide delivery prefetch",
    routers=routers,
    wire=wire,
    topics=(topics.TTS_COMPLETED, topics.DLQ),
    uses_database=False,
    description=DESCRIPTION,
)
