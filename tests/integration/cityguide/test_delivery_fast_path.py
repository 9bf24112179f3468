"""GET /delivery/prefetch answered at the edge (keel.core.fastpath) on the real Redis store: the same
bytes, headers, 404 envelope and metrics as the FastAPI route; odd queries go to that route."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from keel.cityguide.delivery.schemas import Prefetch
from keel.cityguide.delivery.service import DeliveryService
from keel.cityguide.delivery.settings import DeliverySettings
from keel.cityguide.delivery.spec import SPEC
from keel.cityguide.delivery.store import ReadyAudio, RedisReadyAudioStore
from tests.integration.cityguide.conftest import serving
from tests.support.eventually import eventually

ROUTE = "/delivery/prefetch"


class CountingService:
    """The real service behind the FastAPI route, counting that route's calls (the edge holds its own
    reference to the service, so only the full stack goes through this)."""

    def __init__(self, service: DeliveryService) -> None:
        self.service = service
        self.calls = 0

    async def prefetch(self, route_id: str, count: int, after: str | None) -> bytes:
        self.calls += 1
        return await self.service.prefetch(route_id, count, after)


@pytest.fixture
def route_id() -> str:
    return f"fast-{uuid.uuid4().hex[:8]}"


async def _ready(app, route_id: str, count: int) -> None:
    """Ready audio written through the service's own store, as its tts.completed consumer would."""
    store = RedisReadyAudioStore(app.state.infra.redis, 60, prefix=DeliverySettings().redis_key_prefix)
    for n in range(count):
        await store.put(route_id, ReadyAudio(f"{route_id}-a{n}", f"s{n}", float(n), 2.5))


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, "" if k == "x-request-id" else v) for k, v in response.headers.multi_items()]


def _requests(status: str) -> float:
    labels = {"method": "GET", "route": ROUTE, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_a_page_at_the_edge_is_byte_for_byte_what_the_route_answers(make_settings, redis_url, route_id):
    async with serving([SPEC], make_settings(redis_url=redis_url)) as (app, client):
        await _ready(app, route_id, 12)
        app.state.delivery = spy = CountingService(app.state.delivery)

        async def both() -> tuple[httpx.Response, httpx.Response]:
            fast = await client.get(ROUTE, params={"route_id": route_id, "next": 10})
            # An unknown parameter: the fast route leaves it to FastAPI, which ignores it.
            slow = await client.get(ROUTE, params={"route_id": route_id, "next": 10, "v": "1"})
            return fast, slow

        # The links carry exp = now + ttl: ask again if the two straddled a second.
        fast, slow = await eventually(both, until=lambda p: p[0].content == p[1].content, what="same links")

    assert spy.calls >= 1 and fast.status_code == slow.status_code == 200
    assert _headers(fast) == _headers(slow)
    page = Prefetch.model_validate_json(fast.content)
    assert [i.audio_id for i in page.items] == [f"{route_id}-a{n}" for n in range(10)]
    assert page.model_dump_json().encode() == fast.content  # exactly the wire model's own JSON
    print(f"edge == route: {len(fast.content)} B, {len(page.items)} signed links")


async def test_an_unknown_after_at_the_edge_is_the_routes_404_envelope(make_settings, redis_url, route_id):
    rid = {"X-Request-Id": "prefetch-404"}
    async with serving([SPEC], make_settings(redis_url=redis_url)) as (app, client):
        await _ready(app, route_id, 2)
        app.state.delivery = spy = CountingService(app.state.delivery)
        fast = await client.get(ROUTE, params={"route_id": route_id, "after": "nope"}, headers=rid)
        slow = await client.get(ROUTE, params={"route_id": route_id, "after": "nope", "v": "1"}, headers=rid)

    assert spy.calls == 1
    assert fast.status_code == slow.status_code == 404
    assert fast.content == slow.content
    assert fast.json()["error"]["request_id"] == "prefetch-404"
    assert _headers(fast) == _headers(slow)


@pytest.mark.parametrize(
    "query",
    [
        "route_id=r&next=0",
        "route_id=r&next=51",
        "route_id=r&next=%C2%B2",
        "route_id=r&route_id=s",
        "route_id=&next=3",
        f"route_id={'r' * 201}",
        f"route_id=r&after={'a' * 129}",
    ],
    ids=["next-0", "next-51", "next-superscript", "repeated", "blank-route", "long-route", "long-after"],
)
async def test_queries_the_edge_declines_get_the_routes_validation(make_settings, query):
    async with serving([SPEC], make_settings()) as (app, client):
        app.state.delivery = spy = CountingService(app.state.delivery)
        response = await client.get(f"{ROUTE}?{query}")

    if query == "route_id=r&route_id=s":  # FastAPI takes one of them: valid, answered by the route
        assert response.status_code == 200 and spy.calls == 1
    else:
        assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
        assert spy.calls == 0


async def test_edge_answers_are_counted_like_route_answers(make_settings, redis_url, route_id):
    async with serving([SPEC], make_settings(redis_url=redis_url)) as (app, client):
        await _ready(app, route_id, 3)
        app.state.delivery = spy = CountingService(app.state.delivery)
        ok, missing = _requests("200"), _requests("404")
        for _ in range(4):
            assert (await client.get(ROUTE, params={"route_id": route_id})).status_code == 200
        assert (await client.get(ROUTE, params={"route_id": route_id, "after": "x"})).status_code == 404
        counted = (_requests("200") - ok, _requests("404") - missing)

    assert spy.calls == 0
    assert counted == (4, 1)
    print("http_requests_total under", ROUTE, "200 +4, 404 +1")
