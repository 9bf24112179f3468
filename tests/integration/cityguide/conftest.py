"""Running cityguide services (the real app and its lifespan) for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from keel.core.runtime import build_app
from keel.core.service import ServiceSpec
from keel.core.settings import Settings


@asynccontextmanager
async def serving(
    specs: Sequence[ServiceSpec], settings: Settings, *, embedded: bool = False
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The services running in one app on `settings`, and a client talking to it."""
    app = build_app(specs, settings, embedded=embedded)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cityguide") as client,
    ):
        yield app, client
