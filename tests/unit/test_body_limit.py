"""Request body limits: the app's (MAX_BODY_BYTES) and a route's own, smaller or larger (uploads); every
413 in the error envelope, whether the body declares its length or streams it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Request

from keel.core.app import create_app
from keel.core.settings import Settings

APP_LIMIT, SMALL_LIMIT, UPLOAD_LIMIT = 1000, 100, 5000


def _router() -> APIRouter:
    router = APIRouter()

    async def size(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    router.add_api_route("/any", size, methods=["POST"])
    router.add_api_route("/small", size, methods=["POST"], max_body_size=SMALL_LIMIT)
    router.add_api_route("/upload", size, methods=["POST"], max_body_size=UPLOAD_LIMIT)
    return router


@pytest.fixture
def client() -> httpx.AsyncClient:
    settings = Settings(_env_file=None, max_body_bytes=APP_LIMIT)
    app = create_app(
        title="limits", settings=settings, routers=[_router()], max_route_body_bytes=UPLOAD_LIMIT
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


async def _streamed(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 50):
        yield b"x" * 50


def _assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [
        ("/any", APP_LIMIT, 200),
        ("/any", APP_LIMIT + 1, 413),
        ("/small", SMALL_LIMIT, 200),
        ("/small", SMALL_LIMIT + 1, 413),  # within the app's limit, over the route's
        ("/small", APP_LIMIT + 1, 413),
        ("/upload", UPLOAD_LIMIT, 200),  # over the app's limit, within the route's
        ("/upload", UPLOAD_LIMIT + 1, 413),
    ],
)
async def test_declared_length_against_the_app_and_route_limits(client, path, size, status):
    response = await client.post(path, content=b"x" * size)
    if status == 413:
        _assert_413(response)
    else:
        assert response.status_code == 200
        assert response.json() == {"bytes": size}


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [("/any", 1000, 200), ("/any", 1050, 413), ("/small", 150, 413), ("/upload", 3000, 200)],
)
async def test_streamed_body_against_the_app_and_route_limits(client, path, size, status):
    response = await client.post(path, content=_streamed(size))
    if status == 413:
        _assert_413(response)
    else:
        assert response.json() == {"bytes": size}
