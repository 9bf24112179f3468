"""How Keel serves HTTP: uvicorn's httptools protocol plus a deadline on reading each request head.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) but not the time a client may take to
send a request line and headers: a slowloris client trickling a header byte every few seconds holds a
connection, and a file descriptor, forever — nor does it bound a connection that never sends a byte.
This protocol closes a connection whose head is not complete within `HTTP_HEADER_TIMEOUT_S` (default
10 s) of the connection opening or of the first byte of the next request on a kept-alive connection.
Bodies are not covered: the app's own request deadline (`REQUEST_TIMEOUT_S`) bounds those.

The hooks are httptools' parser callbacks (`on_message_begin`, `on_headers_complete`), which uvicorn's
protocol implements by name; no maintained ASGI server we can install here offers a header-read
timeout (granian's `http1_settings.header_read_timeout` would, at the cost of replacing uvicorn).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keel.core.settings import Settings

log = logging.getLogger("keel.http")
HEAD_TIMEOUTS = Counter("http_head_timeouts_total", "Connections closed: request head not complete in time")


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a subclass per timeout carries `head_timeout_s` (see `with_head_timeout`)."""

    head_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()  # the next request on a kept-alive connection gets its own deadline

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        HEAD_TIMEOUTS.inc()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        log.warning("closed %s: request head not complete within %gs", client, self.head_timeout_s)
        self.transport.close()


def with_head_timeout(timeout_s: float) -> type[HeadTimeoutProtocol]:
    """uvicorn builds the protocol itself (`Config(http=<class>)`), so the timeout travels on a subclass."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": timeout_s})


def server_config(app: Any, host: str, port: int, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of `keel up` / `serve` / `worker` (tests serve apps with it too)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": with_head_timeout(settings.http_header_timeout_s),
        "lifespan": "on",
        "log_config": None,
        # keel.core.logging keeps uvicorn.access at WARNING (the edge logs and counts requests), yet
        # uvicorn would still build each access line's arguments, ~1-2 µs of a cached GET.
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        **overrides,
    }
    return uvicorn.Config(app, **options)
