"""Services running in process (lifespan included: relays, consumers, warm-ups) and a client talking
to them — the one way tests start an app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from keel.core.runtime import build_app
from keel.core.service import ServiceSpec
from keel.core.settings import Settings


@asynccontextmanager
async def serving_app(
    specs: Sequence[ServiceSpec],
    settings: Settings,
    *,
    headers: Mapping[str, str] | None = None,
    **build: Any,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """`build` goes to `build_app` (embedded=, run_workers=, ...); `headers`: the client's defaults
    (a caller's `X-User-Id`)."""
    app = build_app(specs, settings, **build)
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://keel", headers=headers) as client,
    ):
        yield app, client
