"""The edge of every app: request id, deadline, golden-signal metrics, the access log, the server span
(when tracing is on) and the last-resort error envelope. keel.core.fastpath answers its hot GET routes
with the same pieces, ahead of the FastAPI stack."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.core import server_spans, telemetry
from keel.core.context import accept_request_id, reset_request_id, set_request_id
from keel.core.envelope import error_body
from keel.core.logging import access_log
from keel.core.metrics import HTTP_REQUESTS, request_series
from keel.core.saturation import InFlight
from keel.core.transient import is_transient, sqlstate

log = logging.getLogger("keel.http")
# Written by keel.core.logging.AccessLog once logging is set up; its args: (method, route, status, ms).
access = logging.getLogger("keel.access")

Header = tuple[bytes, bytes]
# Probes and scrapes: neither traced nor access-logged (they come every few seconds and say nothing).
QUIET_PATHS = frozenset(("/healthz", "/health", "/readyz", "/metrics"))
# scope["state"] key of a server span the app opened for a fast route that then declined.
ADOPTED_SPAN = "keel.server_span"


class HttpMetrics:
    """The golden signals per (method, route template, status), and the access log line (the series
    are keel.core.metrics.RequestSeries: counted without prometheus_client's locks, moved into the
    registry once a second and at every scrape)."""

    def __init__(self, *, access_log: bool = False) -> None:
        self.access_log = access_log
        # Requests being handled, probes and scrapes left out: read by keel.core.saturation.
        self.in_flight = InFlight()

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        elapsed_s: float,
        span: server_spans.server_span | None = None,
    ) -> None:
        """A request's end: its span named and given its status, its metrics, its access line."""
        if span is not None:
            span.finish(method, route, status)
        request_series(method, route, status).observe(elapsed_s)
        if self.access_log and route not in QUIET_PATHS:
            # The request id comes from the context, the trace ids from the span (keel.core.logging.AccessLog).
            writer = access_log()
            if writer is not None:
                writer.request(method, route, status, round(elapsed_s * 1000, 3), span)
            else:
                access.info("%s %s %s %sms", method, route, status, round(elapsed_s * 1000, 3))


class EdgeMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so the hot path pays one function call, not a task per request."""

    def __init__(
        self, app: ASGIApp, *, timeout_s: float, max_body_bytes: int, metrics: HttpMetrics | None = None
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        # Routes may raise their own limit (uploads); only bodies past the largest one are refused here,
        # before any byte is read. Streamed bodies are counted by Starlette's per-route limiter.
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or HttpMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif telemetry.enabled() and scope["path"] not in QUIET_PATHS:
            adopted = scope.get("state", {}).get(ADOPTED_SPAN)
            if adopted is not None:  # opened for a fast route that declined: the same request's span
                await self._serve(scope, receive, send, adopted)
                return
            with server_spans.server_span(scope) as span:
                await self._serve(scope, receive, send, span)
        else:
            await self._serve(scope, receive, send, None)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, span: server_spans.server_span | None
    ) -> None:
        given_id, declared = request_headers(scope)
        request_id = accept_request_id(given_id)
        token = set_request_id(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        rid_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False
        in_flight = None if scope["path"] in QUIET_PATHS else self.metrics.in_flight
        begin = time.perf_counter()
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            # The body is left unread, so the server closes the connection after this answer: say so,
            # or a client could send its next request on a connection being closed.
            await _send_error(send, 413, "payload_too_large", "request body is too large", rid_header, CLOSE)
            if span is not None:
                span.finish(scope["method"], "unmatched", 413)
            HTTP_REQUESTS.labels(scope["method"], "unmatched", "413").inc()
            reset_request_id(token)
            return

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                # The deadline covers producing a response, not streaming a large one to a slow client.
                deadline.reschedule(None)
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        if in_flight is not None:
            in_flight.count += 1
        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            status = await send_failure(send, exc, deadline.expired(), self.timeout_s, rid_header)
        finally:
            if in_flight is not None:
                in_flight.count -= 1
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - begin, span)
            reset_request_id(token)


def classify(exc: Exception, deadline_expired: bool, timeout_s: float) -> tuple[int, str, str]:
    """Our own deadline → 504; a dependency that is down or timed out → 503 (try again); else 500."""
    if isinstance(exc, TimeoutError) and deadline_expired:
        return 504, "timeout", f"request took longer than {timeout_s:g}s"
    if is_transient(exc):
        return 503, "dependency_unavailable", "a dependency is unavailable; try again shortly"
    if sqlstate(exc).startswith("22"):
        # Data exception (class 22): the input holds a value the database cannot store — a client error
        # that slipped past validation, never a server fault.
        return 422, "validation_error", "a value in the request cannot be stored (e.g. a NUL character)"
    return 500, "internal_error", "internal server error"


async def send_failure(
    send: Send, exc: Exception, deadline_expired: bool, timeout_s: float, rid_header: Header
) -> int:
    """Log an exception that escaped the handler and send its envelope; returns the status sent."""
    status, code, message = classify(exc, deadline_expired, timeout_s)
    request_id = rid_header[1].decode()
    if status == 500:
        log.exception("unhandled error", extra={"request_id": request_id})
    else:
        log.warning("%s: %s: %s", code, type(exc).__name__, exc, extra={"request_id": request_id})
    await _send_error(send, status, code, message, rid_header)
    return status


def request_headers(scope: Scope) -> tuple[str | None, str | None]:
    """The first X-Request-Id and Content-Length, in one pass over the headers."""
    request_id = length = None
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            if request_id is None:
                request_id = value.decode("latin-1")
        elif key == b"content-length" and length is None:
            length = value.decode("latin-1")
    return request_id, length


async def send_response(
    send: Send, status: int, body: bytes, media_type: bytes, headers: list[Header], rid_header: Header
) -> None:
    """A complete response with the headers in the order a Starlette `Response` and the edge give them."""
    headers = [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"content-type", media_type),
        rid_header,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


CLOSE: Header = (b"connection", b"close")


async def _send_error(
    send: Send, status: int, code: str, message: str, rid_header: Header, *headers: Header
) -> None:
    body = error_body(code, message, request_id=rid_header[1].decode())
    await send_response(send, status, body, b"application/json", list(headers), rid_header)
