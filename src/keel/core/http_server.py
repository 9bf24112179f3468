"""How Keel serves HTTP: uvicorn's httptools protocol plus a deadline and a size bound on each request head.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) but not the time a client may take to
send a request line and headers: a slowloris client trickling a header byte every few seconds holds a
connection, and a file descriptor, forever — nor does it bound a connection that never sends a byte.
This protocol closes a connection whose head is not complete within `HTTP_HEADER_TIMEOUT_S` (default
10 s) of the connection opening or of the first byte of the next request on a kept-alive connection.
Bodies are not covered: the app's own request deadline (`REQUEST_TIMEOUT_S`) bounds those.

Nor does uvicorn bound a head's size: httptools gathers a header line in memory until it ends, so one
connection could push a 100 MB header. This protocol counts the bytes of the head being read and, past
`MAX_HEADER_BYTES` (default 16 KiB), answers 431 in Keel's error envelope and closes the connection:
what it holds stays under the limit plus one socket read. Requests the parser refuses get their 400 in
the envelope too (uvicorn writes plain text).

The hooks are httptools' parser callbacks (`on_message_begin`, `on_headers_complete`), which uvicorn's
protocol implements by name; no maintained ASGI server we can install here offers a header-read
timeout (granian's `http1_settings.header_read_timeout` would, at the cost of replacing uvicorn).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import uvicorn
from prometheus_client import Counter
from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keel.core.context import new_request_id
from keel.core.envelope import error_body
from keel.core.identity import PEER
from keel.core.settings import Settings

log = logging.getLogger("keel.http")
HEAD_TIMEOUTS = Counter("http_head_timeouts_total", "Connections closed: request head not complete in time")
HEADS_TOO_LARGE = Counter(
    "http_heads_too_large_total", "Connections closed: request head over MAX_HEADER_BYTES"
)
BAD_REQUESTS = Counter(
    "http_parser_rejections_total", "Connections closed: the HTTP parser refused the request"
)


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head already answered with 431."""


class HeadLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound on each request head; a subclass
    per setting carries `head_timeout_s` and `max_head_bytes` (see `with_head_limits`).

    `_head_bytes` counts the bytes of the head being read (None while a body is read). It starts at 0
    when the connection opens and when a message ends, and grows by each read that ends inside a head;
    a read in which a message ended and the next head began is not counted (its part of the head is at
    most one read). When a head completes within a read that may have taken it over the limit, its
    exact size is measured from what the parser gathered."""

    head_timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes: int | None = 0
    _read_len: int = 0
    _head_began_in_read: bool = False
    _refused: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, with Keel's answers to a refused head and to a request the parser refuses.
        self._read_len = len(data)
        self._head_began_in_read = False
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._refused:
                self.send_400_response("invalid HTTP request")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_bytes is not None and not self._head_began_in_read:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()  # the next request on a kept-alive connection gets its own deadline

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        if (
            self._head_bytes or 0
        ) + self._read_len > self.max_head_bytes and self._head_size() > self.max_head_bytes:
            self._refuse_head()
            raise _HeadRefused
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0
        self._head_began_in_read = True

    def _head_size(self) -> int:
        """The head's size as parsed: request line and header lines (CRLFs included)."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_head(self) -> None:
        self._refused = True
        self._disarm_head_timer()
        HEADS_TOO_LARGE.inc()
        log.warning(
            "closed %s: request head over %d bytes (MAX_HEADER_BYTES)", self._peer(), self.max_head_bytes
        )
        message = f"the request head is over {self.max_head_bytes} bytes (MAX_HEADER_BYTES)"
        self._answer_and_close(
            431, b"Request Header Fields Too Large", "request_header_fields_too_large", message
        )

    def send_400_response(self, msg: str) -> None:
        BAD_REQUESTS.inc()
        self._answer_and_close(400, b"Bad Request", "bad_request", msg)

    def _answer_and_close(self, status: int, phrase: bytes, code: str, message: str) -> None:
        request_id = new_request_id()
        body = error_body(code, message, request_id=request_id)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            b"connection: close\r\n\r\n" % (len(body), request_id.encode())
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"

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
        log.warning("closed %s: request head not complete within %gs", self._peer(), self.head_timeout_s)
        self.transport.close()


def with_head_limits(timeout_s: float, max_bytes: int) -> type[HeadLimitProtocol]:
    """uvicorn builds the protocol itself (`Config(http=<class>)`), so the limits travel on a subclass."""
    return type(
        "HeadLimitProtocol", (HeadLimitProtocol,), {"head_timeout_s": timeout_s, "max_head_bytes": max_bytes}
    )


class RecordPeer:
    """Keeps the TCP peer in the scope (`keel.core.identity.PEER`) before uvicorn's proxy middleware
    replaces `client` with the address a trusted proxy forwarded: headers only a trusted proxy may
    set (X-User-Roles) are judged by the peer, never by the forwarded client."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            scope[PEER] = scope.get("client")
        await self.app(scope, receive, send)


def behind_proxies(app: Any, settings: Settings) -> Any:
    """X-Forwarded-For/-Proto believed only from TRUSTED_PROXIES (uvicorn's default trusts loopback, so
    any local client, or a proxy that forwards it verbatim, could pick its address per request); the
    app unwrapped when none is trusted (no hop on the hot path)."""
    if not settings.trusted_proxies:
        return app
    trusted = [str(network) for network in settings.trusted_proxies]
    return RecordPeer(ProxyHeadersMiddleware(app, trusted_hosts=trusted))


def server_config(app: Any, host: str, port: int, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of `keel up` / `serve` / `worker` (tests serve apps with it too)."""
    options: dict[str, Any] = {
        "app": behind_proxies(app, settings),
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": with_head_limits(settings.http_header_timeout_s, settings.max_header_bytes),
        "lifespan": "on",
        "log_config": None,
        # keel.core.logging keeps uvicorn.access at WARNING (the edge logs and counts requests), yet
        # uvicorn would still build each access line's arguments, ~1-2 µs of a cached GET.
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "proxy_headers": False,  # behind_proxies applies them, after noting the peer
        **overrides,
    }
    return uvicorn.Config(**options)
