"""Fast routes at the edge: the same answer as the FastAPI route they stand in for (bytes, headers,
error envelope, metrics), and the full stack for everything they do not answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY
from starlette.responses import Response
from starlette.types import Scope

from keel.core.app import create_app
from keel.core.errors import NotFound
from keel.core.fastpath import FastResponse, FastRoute, FastRoutes, raw_headers, simple_query
from keel.core.settings import Settings

TEMPLATE = "/fast-things/{name}"
THINGS = {"a": b'{"name":"a"}'}


def _thing(name: str) -> tuple[bytes, dict[str, str]]:
    if name == "broken":
        raise ConnectionRefusedError("connect call failed ('127.0.0.1', 6379)")
    if name not in THINGS:
        raise NotFound(f"no thing {name!r}", headers={"X-Source": "db"})
    return THINGS[name], {"X-Source": "memory"}


def _router() -> APIRouter:
    router = APIRouter()

    @router.get(TEMPLATE)
    async def get_thing(name: str) -> Response:
        body, headers = _thing(name)
        return Response(body, media_type="application/json", headers=headers)

    return router


class Calls:
    def __init__(self) -> None:
        self.fast = 0


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def client(calls: Calls) -> httpx.AsyncClient:
    async def fast_thing(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        calls.fast += 1
        if scope["query_string"] or params["name"] == "slow":
            return None
        if params["name"] == "stuck":
            await asyncio.sleep(5)
        body, headers = _thing(params["name"])
        return FastResponse(body, headers=raw_headers(headers))

    routes = FastRoutes()
    routes.add([FastRoute(TEMPLATE, fast_thing)], served=[TEMPLATE])
    settings = Settings(_env_file=None, request_timeout_s=0.2)
    app = create_app(title="fast", settings=settings, routers=[_router()], fast_routes=routes)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://t"
    )


def _count(status: str) -> float:
    labels = {"method": "GET", "route": TEMPLATE, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def _without_request_id(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]


async def test_the_fast_answer_has_the_bytes_and_headers_of_the_full_stack(client, calls):
    fast = await client.get("/fast-things/a")
    slow = await client.get("/fast-things/a?via=stack")  # a query: the fast route declines it
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert _without_request_id(fast) == _without_request_id(slow)
    assert (
        len(fast.headers["x-request-id"]) == 32
        and fast.headers["x-request-id"] != slow.headers["x-request-id"]
    )
    assert calls.fast == 2
    print("fast == slow:", _without_request_id(fast))


async def test_a_declined_request_falls_through_to_the_route(client, calls):
    response = await client.get("/fast-things/slow")
    assert calls.fast == 1
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_other_paths_and_methods_never_reach_the_fast_handler(client, calls):
    assert (await client.get("/fast-things/a/b")).status_code == 404
    assert (await client.post("/fast-things/a")).status_code == 405
    assert (await client.delete("/fast-things/a")).status_code == 405
    assert calls.fast == 0


async def test_an_app_error_is_the_same_envelope_and_headers_as_the_full_stack(client):
    fast = await client.get("/fast-things/nope", headers={"X-Request-Id": "rid-1"})
    slow = await client.get("/fast-things/nope?via=stack", headers={"X-Request-Id": "rid-1"})
    assert fast.status_code == slow.status_code == 404
    assert fast.content == slow.content
    assert fast.json()["error"] == {"code": "not_found", "message": "no thing 'nope'", "request_id": "rid-1"}
    assert _without_request_id(fast) == _without_request_id(slow)
    assert fast.headers["x-source"] == "db"


async def test_a_dependency_down_in_the_fast_handler_is_503_like_in_a_route(client):
    fast = await client.get("/fast-things/broken")
    slow = await client.get("/fast-things/broken?via=stack")
    assert fast.status_code == slow.status_code == 503
    assert fast.json()["error"]["code"] == slow.json()["error"]["code"] == "dependency_unavailable"
    assert "6379" not in fast.text


async def test_a_fast_handler_past_the_deadline_is_504_in_the_envelope(client):
    response = await client.get("/fast-things/stuck")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


async def test_fast_answers_are_counted_under_the_route_template(client):
    ok, missing = _count("200"), _count("404")
    for _ in range(3):
        assert (await client.get("/fast-things/a")).status_code == 200
    assert (await client.get("/fast-things/nope")).status_code == 404
    assert (_count("200") - ok, _count("404") - missing) == (3, 1)
    print("counted: 200 +3, 404 +1 under", TEMPLATE)


def test_a_fast_route_must_shadow_a_get_route_of_the_app():
    route = FastRoute("/elsewhere/{id}", lambda scope, params: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="no FastAPI GET route"):
        FastRoutes().add([route], served=[TEMPLATE])


def test_only_string_parameters_are_taken():
    with pytest.raises(ValueError, match="plain string"):
        FastRoute("/things/{n:int}", lambda scope, params: None)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", {}),
        (b"route_id=r1&next=10", {"route_id": "r1", "next": "10"}),
        (b"route_id=a%20b+c", {"route_id": "a b c"}),
        (b"route_id=r1&route_id=r2", None),
        (b"route_id=", None),
        (b"route_id", None),
        (b"other=1", None),
        (b"route_id=\xd0\xb0", None),
    ],
    ids=["empty", "plain", "escaped", "repeated", "blank", "no-value", "unknown", "non-ascii"],
)
def test_simple_query_takes_plain_queries_only(query, expected):
    assert simple_query(query, frozenset({"route_id", "next"})) == expected


async def test_a_memory_hit_answers_before_the_awaiting_handler_and_a_miss_reaches_it() -> None:
    remembered = {"a": b'{"name":"a","from":"memory"}'}
    awaited: list[str] = []

    def from_memory(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        body = remembered.get(params["name"])
        return None if body is None else FastResponse(body, headers=raw_headers({"X-Source": "memory"}))

    async def load(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        awaited.append(params["name"])
        body, headers = _thing(params["name"])
        return FastResponse(body, headers=raw_headers(headers))

    routes = FastRoutes()
    routes.add([FastRoute(TEMPLATE, load, from_memory=from_memory)], served=[TEMPLATE])
    app = create_app(title="fast", settings=Settings(_env_file=None), routers=[_router()], fast_routes=routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        hits_before = _count("200")
        hit = await client.get("/fast-things/a")
        missing = await client.get("/fast-things/zz", headers={"X-Request-Id": "mem-miss"})

    assert hit.content == remembered["a"] and hit.headers["x-source"] == "memory"
    assert awaited == ["zz"]  # the hit never reached the loader
    assert missing.status_code == 404 and missing.json()["error"]["request_id"] == "mem-miss"
    assert _count("200") == hits_before + 1
