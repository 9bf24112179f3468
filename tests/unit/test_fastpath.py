"""Fast routes at the edge: the same answer as the FastAPI route they stand in for (bytes, headers,
error envelope, metrics), and the full stack for everything they do not answer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import Scope

from keel.core.app import create_app
from keel.core.errors import NotFound
from keel.core.fastpath import FastPost, FastResponse, FastRoute, FastRoutes, raw_headers, simple_query
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
    routes.add([FastRoute(TEMPLATE, fast_thing)], served=[("GET", TEMPLATE)])
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
        FastRoutes().add([route], served=[("GET", TEMPLATE)])


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
    routes.add([FastRoute(TEMPLATE, load, from_memory=from_memory)], served=[("GET", TEMPLATE)])
    app = create_app(title="fast", settings=Settings(_env_file=None), routers=[_router()], fast_routes=routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        hits_before = _count("200")
        hit = await client.get("/fast-things/a")
        missing = await client.get("/fast-things/zz", headers={"X-Request-Id": "mem-miss"})

    assert hit.content == remembered["a"] and hit.headers["x-source"] == "memory"
    assert awaited == ["zz"]  # the hit never reached the loader
    assert missing.status_code == 404 and missing.json()["error"]["request_id"] == "mem-miss"
    assert _count("200") == hits_before + 1


# -- POST routes with a JSON body ----------------------------------------------------------------

POST_TEMPLATE = "/fast-notes"


class Note(BaseModel):
    text: str


def _post_app(seen: list[bytes], max_body_bytes: int = 64) -> Any:
    router = APIRouter()

    @router.post(POST_TEMPLATE, status_code=201)
    async def add_note(note: Note) -> Response:
        return Response(note.model_dump_json(), status_code=201, media_type="application/json")

    async def fast_note(scope: Scope, params: dict[str, str], body: bytes) -> FastResponse | None:
        seen.append(body)
        try:
            note = Note.model_validate_json(body)
        except ValidationError:
            return None
        return FastResponse(note.model_dump_json().encode(), 201)

    routes = FastRoutes()
    routes.add([FastPost(POST_TEMPLATE, fast_note, max_body_bytes)], served=[("POST", POST_TEMPLATE)])
    return create_app(title="fast", settings=Settings(_env_file=None), routers=[router], fast_routes=routes)


async def test_a_fast_post_answers_what_the_route_answers_and_declines_into_the_route_with_its_body():
    seen: list[bytes] = []
    app = _post_app(seen)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        before = (
            REGISTRY.get_sample_value(
                "http_requests_total", {"method": "POST", "route": POST_TEMPLATE, "status": "201"}
            )
            or 0.0
        )
        fast = await client.post(POST_TEMPLATE, json={"text": "hi"})
        refused = await client.post(POST_TEMPLATE, json={"text": 5})  # the handler declines: the route's 422
        too_long = await client.post(POST_TEMPLATE, json={"text": "x" * 100})  # past the limit: unread
        as_text = await client.post(
            POST_TEMPLATE, content=b'{"text": "hi"}', headers={"content-type": "text/plain"}
        )

    assert fast.status_code == 201 and fast.json() == {"text": "hi"}
    assert len(fast.headers["x-request-id"]) == 32
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"
    assert refused.json()["error"]["details"][0]["field"] == "body.text"  # the route read the same body
    assert too_long.status_code == 201 and too_long.json() == {
        "text": "x" * 100
    }  # the route's own limit is larger
    assert as_text.status_code == 422  # a text body is the route's to refuse
    assert seen == [b'{"text":"hi"}', b'{"text":5}']  # the edge read only the two bodies it could take
    counted = REGISTRY.get_sample_value(
        "http_requests_total", {"method": "POST", "route": POST_TEMPLATE, "status": "201"}
    )
    assert counted == before + 2  # the fast answer and the route's, under the one template


async def _call(app: Any, chunks: list[bytes]) -> tuple[int, bytes]:
    """A POST whose body comes in `chunks` (one ASGI message each), with its length declared."""
    body = b"".join(chunks)
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": POST_TEMPLATE,
        "raw_path": POST_TEMPLATE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_body_in_several_messages_is_read_whole_and_replayed_whole_to_the_route():
    seen: list[bytes] = []
    app = _post_app(seen)
    assert await _call(app, [b'{"te', b'xt": "a', b'b"}']) == (201, b'{"text":"ab"}')
    status, body = await _call(app, [b'{"text"', b": 7}"])  # declined after the edge read both messages
    assert status == 422 and b'"field":"body.text"' in body
    assert seen == [b'{"text": "ab"}', b'{"text": 7}']


def test_a_fast_post_must_shadow_a_post_route_of_the_app():
    route = FastPost(POST_TEMPLATE, lambda scope, params, body: None, 64)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="no FastAPI POST route"):
        FastRoutes().add([route], served=[("GET", POST_TEMPLATE)])
