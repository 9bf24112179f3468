"""Abuse of every business route of the five HTTP services, each served on loopback as
`keel serve` serves it: identity (401), list limits (422), body size (413, declared and chunked) and the
tickets rate limit (429). Routes come from the service registry, so a new route is checked the day it
lands; "requires a user" is read from its dependencies and must agree with its OpenAPI security."""

from __future__ import annotations

import contextlib
import http.client
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from keel import services
from keel.core.runtime import build_app
from keel.core.settings import Settings
from tests.support.servers import idempotent_producers
from tests.support.serving import served

# Five services start in the first test's fixture: room for a loaded machine.
pytestmark = pytest.mark.timeout(600)

HTTP_SERVICES = ("tickets", "orders", "videos", "orchestrator", "delivery-prefetch")
TICKETS_LIMIT = (
    20  # per user per minute while this module runs: low enough to reach, high enough for the rest
)
MAX_BODY = 1_000_000
ENVELOPE = {"code", "message", "request_id"}


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    path: str
    requires_user: bool
    json_body: bool
    limit_max: int | None  # the `limit` query parameter's maximum, when the route lists

    def url(self) -> str:
        """The path with every parameter filled in (a fresh UUID: any value will do before auth)."""
        path = self.path
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
        return path


def _requires_user(dependant: Dependant) -> bool:
    """The X-User-Id header scheme (keel.core.auth) somewhere in the route's dependency tree: a route
    declares it, and the 401 test below holds it to it."""
    call = dependant.call
    if isinstance(call, APIKeyHeader) and call.model.name == "X-User-Id":
        return True
    return any(_requires_user(sub) for sub in dependant.dependencies)


def _limit_max(route: APIRoute) -> int | None:
    for param in route.dependant.query_params:
        if param.alias == "limit":
            return next(int(m.le) for m in param.field_info.metadata if getattr(m, "le", None) is not None)
    return None


def business_routes(service: str) -> list[Route]:
    routes = []
    for router in services.load(service).routers():
        for r in router.routes:
            assert isinstance(r, APIRoute), r
            json_body = r.body_field is not None and not isinstance(r.body_field.field_info, params.Form)
            for method in sorted(r.methods):
                routes.append(
                    Route(
                        service,
                        method,
                        r.path,
                        _requires_user(r.dependant),
                        json_body,
                        _limit_max(r),
                    )
                )
    return routes


ROUTES = [r for s in HTTP_SERVICES for r in business_routes(s)]


def _settings(values: dict[str, Any]) -> Settings:
    return Settings.model_validate({**values, "secret": "api-abuse-secret-value"})


@pytest.fixture(scope="module")
def bases(pg_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every HTTP service running on its own port: name → base URL."""
    values = {
        "postgres_dsn": pg_dsn,
        "redis_url": redis_url,
        "data_dir": tmp_path_factory.mktemp("abuse") / "keel",
        "kafka_idempotence": idempotent_producers(),
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TICKETS_RATE_LIMIT", f"{TICKETS_LIMIT}/minute")
        env.setenv("TTS_MODE", "instant")
        settings = _settings(values)
        with contextlib.ExitStack() as stack:
            yield {
                name: stack.enter_context(served(build_app([services.load(name)], settings), settings))
                for name in HTTP_SERVICES
            }


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def as_user() -> dict[str, str]:
    return {"X-User-Id": f"abuser-{uuid.uuid4().hex[:10]}"}


def assert_envelope(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    assert response.status_code == status, f"{what}: {response.status_code} {response.text[:300]}"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= ENVELOPE, f"{what}: {response.text[:300]}"
    assert error["request_id"] == response.headers["x-request-id"], what
    return error


def test_the_registry_lists_every_route_the_apps_document(bases, client):
    """The enumeration cannot drift: what each running app documents is what we check, and a route
    requires a user exactly when its OpenAPI operation declares the X-User-Id scheme."""
    for name in HTTP_SERVICES:
        documented = client.get(f"{bases[name]}/openapi.json").json()["paths"]
        ours = {(r.method.lower(), r.path): r for r in ROUTES if r.service == name}
        for path, operations in documented.items():
            for method, op in operations.items():
                # /health: the videos service's liveness alias (seed 003).
                if path.startswith(("/health", "/readyz", "/metrics", "/files/")):
                    continue
                route = ours.get((method, path))
                assert route is not None, f"{name}: {method.upper()} {path} is served but not enumerated"
                declared = any("X-User-Id" in str(s) for s in op.get("security", []))
                declared = declared or any("APIKeyHeader" in k for s in op.get("security", []) for k in s)
                assert declared == route.requires_user, (
                    f"{name} {method.upper()} {path}: OpenAPI security disagrees"
                )
    print(
        f"\nroutes enumerated: {len(ROUTES)} across {len(HTTP_SERVICES)} services, "
        f"{sum(r.requires_user for r in ROUTES)} require X-User-Id"
    )


# Sent with http.client, which (unlike h11) puts a whitespace-only value on the wire as given.
IDENTITIES = {"missing": None, "empty": "", "blank": "   \t ", "no-break spaces": "\u00a0\u00a0"}


def send_raw(base: str, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        raw = conn.getresponse()
        return httpx.Response(raw.status, headers=raw.getheaders(), content=raw.read())
    finally:
        conn.close()


def test_missing_empty_or_blank_user_is_401_in_the_envelope_on_every_route_that_requires_one(bases):
    guarded = [r for r in ROUTES if r.requires_user]
    assert guarded, "no route requires a user: the enumeration is broken"
    statuses: dict[int, int] = {}
    for route in guarded:
        for label, value in IDENTITIES.items():
            headers = {"Content-Type": "application/json"} if route.json_body else {}
            if value is not None:
                headers["X-User-Id"] = value
            body = b"{}" if route.json_body else b""
            response = send_raw(bases[route.service], route.method, route.url(), headers, body)
            error = assert_envelope(response, 401, f"{route.method} {route.path} with {label} X-User-Id")
            assert error["code"] == "unauthorized"
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    print(
        f"\n401 check: {len(guarded)} routes x {len(IDENTITIES)} identities ({', '.join(IDENTITIES)}) = "
        f"{sum(statuses.values())} requests, statuses {statuses}"
    )


def test_a_list_limit_above_the_maximum_is_422_naming_the_field_on_every_list_route(bases, client):
    lists = [r for r in ROUTES if r.limit_max is not None]
    assert lists, "no list route found: the enumeration is broken"
    for route in lists:
        response = client.request(
            route.method,
            f"{bases[route.service]}{route.url()}",
            params={"limit": route.limit_max + 1},
            headers=as_user(),
        )
        error = assert_envelope(response, 422, f"{route.method} {route.path}?limit={route.limit_max + 1}")
        assert "limit" in str(error.get("details")), error
    print(
        f"\nlist limit check: {len(lists)} list routes, limit=max+1 → 422 naming `limit` on all "
        f"({', '.join(sorted({f'{r.path} (max {r.limit_max})' for r in lists}))})"
    )


def oversized_json() -> bytes:
    return b'{"title": "' + b"x" * MAX_BODY + b'", "description": "too big"}'


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_json_body_over_1_mb_is_413_declared_or_chunked_on_every_json_route(bases, client):
    bodies = [r for r in ROUTES if r.json_body]
    assert bodies, "no JSON body route found: the enumeration is broken"
    body = oversized_json()
    seen = 0
    for route in bodies:
        url = f"{bases[route.service]}{route.url()}"
        headers = {**as_user(), "Content-Type": "application/json"}
        declared = client.request(route.method, url, content=body, headers=headers)
        assert declared.request.headers["content-length"] == str(len(body))
        streamed = client.request(route.method, url, content=chunks(body), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert streamed.request.headers["transfer-encoding"] == "chunked"
        for how, response in (("declared", declared), ("chunked", streamed)):
            error = assert_envelope(response, 413, f"{route.method} {route.path} ({how}, {len(body)} bytes)")
            assert error["code"] == "payload_too_large"
            seen += 1
    print(
        f"\nbody limit check: {len(bodies)} JSON routes x (Content-Length, chunked) = {seen} requests of "
        f"{len(body):,} bytes, all 413"
    )


def test_the_tickets_rate_limit_answers_429_with_retry_after_on_every_tickets_route(bases, client):
    user = as_user()
    base = bases["tickets"]
    statuses = [client.get(f"{base}/v1/tickets", headers=user).status_code for _ in range(TICKETS_LIMIT + 1)]
    assert statuses == [200] * TICKETS_LIMIT + [429], statuses
    tickets_routes = [r for r in ROUTES if r.service == "tickets"]
    for route in tickets_routes:  # the limit is the router's: every route of the user is over it now
        body = {"json": {"title": "over the limit", "description": "x"}} if route.json_body else {}
        response = client.request(route.method, f"{base}{route.url()}", headers=user, **body)
        error = assert_envelope(response, 429, f"{route.method} {route.path} over the limit")
        assert error["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
    other = client.get(f"{base}/v1/tickets", headers=as_user())
    assert other.status_code == 200, "the limit is per user"
    print(
        f"\nrate limit check: {TICKETS_LIMIT}/minute per user → request {TICKETS_LIMIT + 1} is 429; "
        f"{len(tickets_routes)} tickets routes all 429 with Retry-After for that user; another user 200"
    )
