"""Services running in process (lifespan included: relays, consumers, warm-ups) and a client talking
to them — the one way tests start an app; and apps on a real loopback port, served as `keel serve`
serves them (keel.core.http_server), for tests that need sockets: in a thread with its own event loop
(`served`) or as a task of the test's loop (`serving_http`). Both yield the base URL once the app's
lifespan has started and stop the server (draining, then the lifespan's shutdown) on exit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from keel.core.http_server import HttpServer, bind
from keel.core.runtime import build_app
from keel.core.service import ServiceSpec
from keel.core.settings import Settings
from tests.support.eventually import eventually, eventually_sync


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


@contextmanager
def served(app: Any, settings: Settings | None = None, *, start_within_s: float = 60.0) -> Iterator[str]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = HttpServer(app, settings or Settings(_env_file=None), sock=sock)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.run(),), name=f"http-{port}", daemon=True
    )
    thread.start()
    try:
        eventually_sync(
            lambda: server.started or not thread.is_alive(),
            until=bool,
            timeout_s=start_within_s,
            what="app started",
        )
        assert server.started, "the app did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(30)
        loop.close()


@asynccontextmanager
async def serving_http(
    app: Any, settings: Settings | None = None, *, start_within_s: float = 30.0
) -> AsyncIterator[str]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = HttpServer(app, settings or Settings(_env_file=None), sock=sock)
    task = asyncio.create_task(server.run())
    try:
        await eventually(
            lambda: server.started or task.done(), until=bool, timeout_s=start_within_s, what="app up"
        )
        assert server.started, "the app did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        await task
