"""GET /order/{id} served from the cache ahead of the FastAPI stack (keel.core.fastpath): the same
bytes, headers and metrics as the FastAPI route, which still answers misses and every query."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import REGISTRY

from keel.core.db import Database
from keel.orders.fake import fake_order
from keel.orders.schemas import parse_order
from keel.orders.service import Found, OrderService
from tests.integration.orders.conftest import serving

ROUTE = "/order/{order_uid}"


class CountingService:
    """The real service behind the FastAPI route, counting the calls that route makes (the edge holds
    its own reference to the service, so only the full stack goes through this)."""

    def __init__(self, service: OrderService) -> None:
        self.service = service
        self.calls = 0

    async def get(self, order_uid: str, *, nocache: bool = False) -> Found:
        self.calls += 1
        return await self.service.get(order_uid, nocache=nocache)


async def _stored(db: Database, order: dict[str, Any]) -> None:
    """Written before the service starts: its warm-up puts the order in the cache."""
    async with db.unit_of_work() as uow:
        await OrderService(db, cache=None).save([parse_order(order)], uow)
        await uow.commit()


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    """Header names in order, with the values that must match (not the id and the timing)."""
    varying = {"x-request-id", "x-duration-ms"}
    return [(k, "" if k in varying else v) for k, v in response.headers.multi_items()]


def _requests(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_a_cached_order_at_the_edge_is_byte_for_byte_what_the_route_answers(order_settings, db, rng):
    order = fake_order(rng)
    await _stored(db, order)
    async with serving(order_settings()) as (app, client):
        app.state.orders = spy = CountingService(app.state.orders)
        fast = await client.get(f"/order/{order['order_uid']}")
        slow = await client.get(f"/order/{order['order_uid']}", params={"nocache": "0"})

    assert spy.calls == 1  # the query-less request never reached FastAPI
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert _headers(fast) == _headers(slow)
    assert fast.headers["x-source"] == "cache" and float(fast.headers["x-duration-ms"]) >= 0
    assert len(fast.headers["x-request-id"]) == 32
    print(f"edge == route: {len(fast.content)} B,", [k for k, _ in _headers(fast)])


async def test_a_miss_falls_through_to_the_route_its_404_envelope_and_its_metrics(order_settings):
    rid = {"X-Request-Id": "order-404"}
    async with serving(order_settings()) as (app, client):
        app.state.orders = spy = CountingService(app.state.orders)
        misses = REGISTRY.get_sample_value("cache_requests_total", {"cache": "orders", "result": "miss"}) or 0
        response = await client.get("/order/no-such-order", headers=rid)
        counted = REGISTRY.get_sample_value("cache_requests_total", {"cache": "orders", "result": "miss"})

    assert spy.calls == 1
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "order 'no-such-order' not found",
        "request_id": "order-404",
    }
    assert response.headers["x-source"] == "db" and response.headers["x-request-id"] == "order-404"
    assert counted == misses + 1  # once, by the route's read: the edge's look-up counts hits only


async def test_queries_go_through_fastapi_which_validates_them(order_settings, db, rng):
    order = fake_order(rng)
    await _stored(db, order)
    async with serving(order_settings()) as (app, client):
        app.state.orders = spy = CountingService(app.state.orders)
        from_db = await client.get(f"/order/{order['order_uid']}", params={"nocache": "1"})
        invalid = await client.get(f"/order/{order['order_uid']}", params={"nocache": "maybe"})

    assert from_db.status_code == 200 and from_db.headers["x-source"] == "db"
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "validation_error"
    assert spy.calls == 1  # the invalid one stopped at validation


async def test_edge_answers_are_counted_like_route_answers(order_settings, db, rng):
    order = fake_order(rng)
    await _stored(db, order)
    async with serving(order_settings()) as (app, client):
        app.state.orders = spy = CountingService(app.state.orders)
        ok, missing = _requests(ROUTE, "200"), _requests(ROUTE, "404")
        for _ in range(5):
            assert (await client.get(f"/order/{order['order_uid']}")).status_code == 200
        assert (await client.get("/order/no-such-order")).status_code == 404
        counted = (_requests(ROUTE, "200") - ok, _requests(ROUTE, "404") - missing)

    assert spy.calls == 1  # the miss
    assert counted == (5, 1)
    print("http_requests_total under", ROUTE, "200 +5, 404 +1")
