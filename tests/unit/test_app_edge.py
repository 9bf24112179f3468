"""The app factory's promises: one envelope for every error, request ids, deadlines, body limit, auth."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel, Field

from keel.core.app import create_app
from keel.core.auth import CurrentUser
from keel.core.errors import TooManyRequests
from keel.core.health import ReadinessCheck
from keel.core.settings import Settings


class Body(BaseModel):
    title: str = Field(min_length=3)


def _router() -> APIRouter:
    router = APIRouter()

    @router.post("/items")
    async def create(body: Body, user: CurrentUser) -> dict[str, str]:
        return {"title": body.title, "user": user}

    @router.get("/items/{item_id}")
    async def get(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail that must not leak")

    @router.get("/slow")
    async def slow() -> None:
        await asyncio.sleep(5)

    @router.get("/db-down")
    async def db_down() -> None:
        raise ConnectionRefusedError("connect call failed ('127.0.0.1', 5432)")

    @router.get("/dependency-timeout")
    async def dependency_timeout() -> None:
        raise TimeoutError  # e.g. a connect timeout, well inside the request's own deadline

    @router.get("/limited")
    async def limited() -> None:
        raise TooManyRequests("slow down", headers={"Retry-After": "3"})

    return router


@pytest.fixture
def client() -> httpx.AsyncClient:
    settings = Settings(_env_file=None, request_timeout_s=0.2, max_body_bytes=1000)
    app = create_app(title="edge", settings=settings, routers=[_router()])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://t"
    )


def _assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


async def test_request_id_is_echoed_when_given_and_generated_when_not(client):
    given = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32


async def test_unsafe_request_id_is_replaced(client):
    response = await client.get("/healthz", headers={"X-Request-Id": "a b<script>"})
    assert response.headers["x-request-id"] != "a b<script>"


async def test_unknown_route_is_404_in_the_envelope(client):
    _assert_envelope(await client.get("/nope"), 404, "not_found")


async def test_wrong_method_is_405_in_the_envelope(client):
    _assert_envelope(await client.delete("/items/1"), 405, "method_not_allowed")


async def test_invalid_body_is_422_with_field_details(client):
    response = await client.post("/items", json={"title": "x"}, headers={"X-User-Id": "u1"})
    error = _assert_envelope(response, 422, "validation_error")
    assert error["details"][0]["field"] == "body.title"


async def test_invalid_path_parameter_is_422(client):
    _assert_envelope(await client.get("/items/abc"), 422, "validation_error")


async def test_missing_user_is_401(client):
    _assert_envelope(await client.post("/items", json={"title": "abc"}), 401, "unauthorized")


async def test_blank_user_is_401(client):
    response = await client.post("/items", json={"title": "abc"}, headers={"X-User-Id": "   "})
    _assert_envelope(response, 401, "unauthorized")


async def test_user_header_reaches_the_route(client):
    response = await client.post("/items", json={"title": "abc"}, headers={"X-User-Id": "u1"})
    assert response.status_code == 200
    assert response.json() == {"title": "abc", "user": "u1"}


async def test_body_over_the_limit_is_413(client):
    body = {"title": "x" * 2000}
    response = await client.post("/items", json=body, headers={"X-User-Id": "u1"})
    _assert_envelope(response, 413, "payload_too_large")


async def test_streamed_body_over_the_limit_is_413(client):
    async def chunks():
        for _ in range(10):
            yield b"x" * 500

    response = await client.post(
        "/items", content=chunks(), headers={"X-User-Id": "u1", "Content-Type": "application/json"}
    )
    _assert_envelope(response, 413, "payload_too_large")


async def test_unhandled_error_is_500_without_details(client):
    response = await client.get("/boom")
    error = _assert_envelope(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "details" not in error


async def test_a_dependency_that_is_down_is_503_not_500(client):
    response = await client.get("/db-down")
    _assert_envelope(response, 503, "dependency_unavailable")
    assert "5432" not in response.text  # no infrastructure detail leaks


async def test_a_dependency_timeout_inside_the_deadline_is_503_not_504(client):
    _assert_envelope(await client.get("/dependency-timeout"), 503, "dependency_unavailable")


async def test_slow_request_is_cut_at_the_deadline_with_504(client):
    _assert_envelope(await client.get("/slow"), 504, "timeout")


async def test_rate_limit_error_is_429_with_retry_after(client):
    response = await client.get("/limited")
    _assert_envelope(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "3"


async def test_metrics_count_requests_by_route_template(client):
    await client.get("/items/7")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/items/{item_id}",status="200"}' in text
    assert "http_request_duration_seconds_bucket" in text


async def test_readyz_names_the_dependency_that_is_down():
    async def down() -> None:
        raise ConnectionError("refused")

    async def up() -> None:
        return None

    checks = [ReadinessCheck("postgres", up), ReadinessCheck("redis", down)]
    app = create_app(title="r", settings=Settings(_env_file=None), readiness=lambda: checks)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        response = await c.get("/readyz")
    error = _assert_envelope(response, 503, "not_ready")
    assert "redis" in error["message"]
    assert error["details"]["checks"]["postgres"] == "ok"


async def test_healthz_is_200_even_when_dependencies_are_down():
    async def down() -> None:
        raise ConnectionError("refused")

    app = create_app(
        title="h", settings=Settings(_env_file=None), readiness=lambda: [ReadinessCheck("redis", down)]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        assert (await c.get("/healthz")).status_code == 200


async def test_a_value_the_database_cannot_store_is_422_not_500():
    class CharacterNotInRepertoire(Exception):
        sqlstate = "22021"  # what asyncpg raises for U+0000 in text

    router = APIRouter()

    @router.get("/nul")
    async def nul() -> None:
        raise CharacterNotInRepertoire("invalid byte sequence for encoding UTF8: 0x00")

    app = create_app(title="nul", settings=Settings(_env_file=None), routers=[router])
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/nul")
    _assert_envelope(response, 422, "validation_error")
