"""The edge of every app: request id, deadline, golden-signal metrics, last-resort error envelope."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.core.context import accept_request_id, reset_request_id, set_request_id
from keel.core.envelope import error_body
from keel.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from keel.core.transient import is_transient, sqlstate

log = logging.getLogger("keel.http")


class EdgeMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so the hot path pays one function call, not a task per request."""

    def __init__(self, app: ASGIApp, *, timeout_s: float, max_body_bytes: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        # Routes may raise their own limit (uploads); only bodies past the largest one are refused here,
        # before any byte is read. Streamed bodies are counted by Starlette's per-route limiter.
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = accept_request_id(_header(scope, b"x-request-id"))
        token = set_request_id(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        rid_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False
        begin = time.perf_counter()
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(send, 413, "payload_too_large", "request body is too large", rid_header)
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

        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            status, code, message = _classify(exc, deadline.expired(), self.timeout_s)
            if status == 500:
                log.exception("unhandled error", extra={"request_id": request_id})
            else:
                log.warning("%s: %s: %s", code, type(exc).__name__, exc, extra={"request_id": request_id})
            await _send_error(send, status, code, message, rid_header)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - begin
            labels = (scope["method"], template, str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(elapsed)
            reset_request_id(token)


def _classify(exc: Exception, deadline_expired: bool, timeout_s: float) -> tuple[int, str, str]:
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None


async def _send_error(
    send: Send, status: int, code: str, message: str, rid_header: tuple[bytes, bytes]
) -> None:
    body = error_body(code, message, request_id=rid_header[1].decode())
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                rid_header,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
