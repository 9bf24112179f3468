"""A running ticket service (the real app and its lifespan) on a fresh database and the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.tickets.spec import SPEC
from tests.support.serving import serving_app


def serving(settings: Settings) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
    """The ticket service running (lifespan included) on `settings`, and a client talking to it."""
    return serving_app([SPEC], settings)


@asynccontextmanager
async def _started(settings: Settings, *, run_workers: bool) -> AsyncIterator[FastAPI]:
    app = build_app([SPEC], settings, run_workers=run_workers)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture
async def tickets_app(fresh_pg_dsn, redis_url, make_settings) -> AsyncIterator[FastAPI]:
    async with _started(
        make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url), run_workers=True
    ) as app:
        yield app


@pytest_asyncio.fixture
async def api_only_app(fresh_pg_dsn, redis_url, make_settings) -> AsyncIterator[FastAPI]:
    """The ticket API without its workers (`keel serve tickets --api-only`): for tests that read the
    outbox rows a request wrote, which the relay deletes once the broker has them."""
    async with _started(
        make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url), run_workers=False
    ) as app:
        yield app


@asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://tickets") as c:
        yield c


@pytest_asyncio.fixture
async def client(tickets_app) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(tickets_app) as c:
        yield c


@pytest_asyncio.fixture
async def api_client(api_only_app) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(api_only_app) as c:
        yield c


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def as_user(user) -> Callable[..., dict[str, str]]:
    def headers(who: str | None = None, **extra: str) -> dict[str, str]:
        return {"X-User-Id": who or user, **extra}

    return headers


def ticket_body(**overrides: Any) -> dict[str, Any]:
    return {"title": "Printer on fire", "description": "Third floor, next to the kitchen.", **overrides}
