"""Delivery prefetch's near cache (PREFETCH_PAGE_CACHE_SEC): a polled page is answered from memory,
this process's own tts.completed drop the route's pages at once, another replica's write shows up
within the window, and every link served still lives at least LINK_TTL_SEC."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from obstore.store import MemoryStore
from prometheus_client import REGISTRY

from keel.cityguide.delivery.service import DeliveryService
from keel.cityguide.delivery.settings import DeliverySettings
from keel.cityguide.delivery.spec import SPEC
from keel.cityguide.delivery.store import MemoryReadyAudioStore, ReadyAudio, RedisReadyAudioStore
from keel.core.cache.recent import RecentPages
from keel.core.signing import UrlSigner, VerifyResult
from keel.core.storage import ObstoreObjectStore
from tests.integration.cityguide.conftest import serving
from tests.integration.cityguide.support import publish_ready
from tests.support.eventually import eventually

ROUTE = "/delivery/prefetch"


@pytest.fixture
def route_id() -> str:
    return f"near-{uuid.uuid4().hex[:8]}"


def _hits() -> float:
    return (
        REGISTRY.get_sample_value("cache_requests_total", {"cache": "delivery-pages", "result": "hit"}) or 0.0
    )


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["audio_id"] for item in response.json()["items"]]


async def _written_elsewhere(app, route_id: str, n: int) -> None:
    """An audio put straight into the shared Redis list, as another replica's consumer would."""
    store = RedisReadyAudioStore(app.state.infra.redis, 60, prefix=DeliverySettings().redis_key_prefix)
    await store.put(route_id, ReadyAudio(f"{route_id}-a{n}", f"s{n}", float(n), 1.0))


async def test_a_polled_page_comes_from_memory_and_own_audio_drops_it_at_once(
    make_settings, redis_url, route_id, monkeypatch
):
    # A long window: what shows up during the test can only have come through `forget`.
    monkeypatch.setenv("PREFETCH_PAGE_CACHE_SEC", "30")
    async with serving([SPEC], make_settings(redis_url=redis_url), embedded=True) as (app, client):
        await _written_elsewhere(app, route_id, 0)
        first = await client.get(ROUTE, params={"route_id": route_id, "next": 10})
        hits = _hits()
        again = await client.get(ROUTE, params={"route_id": route_id, "next": 10})
        assert _hits() == hits + 1 and again.content == first.content

        await _written_elsewhere(app, route_id, 1)
        stale = await client.get(ROUTE, params={"route_id": route_id, "next": 10})

        await publish_ready(app, route_id, [2])  # consumed by this process's own consumer
        fresh = await eventually(
            lambda: client.get(ROUTE, params={"route_id": route_id, "next": 10}),
            until=lambda r: len(_ids(r)) == 3,
            what="the consumed audio in the page",
        )

    assert _ids(first) == [f"{route_id}-a0"]
    assert _ids(stale) == [f"{route_id}-a0"]  # another replica's write waits out the window
    assert _ids(fresh) == [f"{route_id}-a{n}" for n in range(3)]


async def test_another_replicas_write_shows_up_within_the_window(
    make_settings, redis_url, route_id, monkeypatch
):
    monkeypatch.setenv("PREFETCH_PAGE_CACHE_SEC", "0.3")
    async with serving([SPEC], make_settings(redis_url=redis_url)) as (app, client):
        await _written_elsewhere(app, route_id, 0)
        assert _ids(await client.get(ROUTE, params={"route_id": route_id})) == [f"{route_id}-a0"]
        await _written_elsewhere(app, route_id, 1)
        written = time.monotonic()
        await eventually(
            lambda: client.get(ROUTE, params={"route_id": route_id}),
            until=lambda r: len(_ids(r)) == 2,
            what="the other replica's audio",
        )
        waited = time.monotonic() - written

    assert waited < 0.3 + 1.0  # the window, plus the poll's own pace on a busy machine
    print(f"another replica's audio visible after {waited * 1000:.0f} ms (window 300 ms)")


async def test_without_the_window_every_page_comes_from_the_store(
    make_settings, redis_url, route_id, monkeypatch
):
    monkeypatch.setenv("PREFETCH_PAGE_CACHE_SEC", "0")
    async with serving([SPEC], make_settings(redis_url=redis_url)) as (app, client):
        await _written_elsewhere(app, route_id, 0)
        hits = _hits()
        before = _ids(await client.get(ROUTE, params={"route_id": route_id}))
        await _written_elsewhere(app, route_id, 1)
        after = _ids(await client.get(ROUTE, params={"route_id": route_id}))

    assert before == [f"{route_id}-a0"] and after == [f"{route_id}-a0", f"{route_id}-a1"]
    assert _hits() == hits


async def test_a_page_served_late_in_its_window_still_promises_the_full_link_ttl() -> None:
    now = [1_000_000.0]
    signer = UrlSigner("s3cret", clock=lambda: now[0])
    pages = RecentPages("test-delivery-pages", ttl_s=1.0, clock=lambda: now[0])
    store = MemoryReadyAudioStore(60, clock=lambda: now[0])
    await store.put("r", ReadyAudio("r-a0", "s0", 0.0, 1.0))
    service = DeliveryService(
        store, signer, ObstoreObjectStore(MemoryStore()), link_ttl_s=3600, recent_pages=pages
    )

    signed = await service.prefetch("r", 3, None)
    now[0] += 0.999  # still inside the window: the same bytes, signed a moment ago
    served = service.recent_page("r", 3, None)
    now[0] += 0.002
    expired = service.recent_page("r", 3, None)

    assert served == signed and expired is None
    item = orjson.loads(served)["items"][0]
    exp = int(parse_qs(urlsplit(item["url"]).query)["exp"][0])
    assert item["ttl"] == 3600
    assert exp - (1_000_000.0 + 0.999) >= 3600  # alive for the promised ttl from the moment it is served
    link = urlsplit(item["url"])
    assert signer.verify(link.path, exp, parse_qs(link.query)["sig"][0]) is VerifyResult.OK
