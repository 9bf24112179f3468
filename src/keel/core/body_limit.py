"""Starlette's request-body limit, its 413 answered in Keel's error envelope.

Starlette counts streamed (chunked) bodies and honours per-route limits (uploads), but when a request
declares a Content-Length over the limit it replaces whatever the app answered with a plain-text
"Content Too Large". That happens on services whose uploads raise the edge's limit (tickets): their
JSON routes still stop at MAX_BODY_BYTES, and the answer must be the envelope like every other error.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import Message, Receive, Scope, Send

from keel.core.envelope import error_body

# Before a 413 is sent, what is left of the body is read and dropped, up to this much and this long: a
# server that closes a connection with unread bytes in it resets it, and the client, still sending,
# may lose the answer. Past either bound the connection is closed anyway.
DRAIN_BYTES = 2 * 1024 * 1024
DRAIN_S = 2.0


class EnvelopedBodyLimitMiddleware(RequestBodyLimitMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: bytes | None = None  # the envelope, once Starlette's plain-text 413 has started
        read = _Read(done=True)

        async def enveloped(message: Message) -> None:
            nonlocal body
            if message["type"] == "http.response.start" and message["status"] == 413:
                if not read.done:
                    await _drain(receive)
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                if content_type.startswith(b"text/plain"):
                    body = error_body(
                        "payload_too_large",
                        f"request body is larger than {self.max_body_size} bytes",
                        request_id=scope.get("state", {}).get("request_id"),
                    )
            if body is None:
                await send(message)
            elif message["type"] == "http.response.start":
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            # What is left of the body is not read: the connection cannot carry
                            # another request, and the client must not send one on it.
                            (b"connection", b"close"),
                        ],
                    }
                )
            elif not message.get("more_body", False):
                await send({"type": "http.response.body", "body": body})

        declared = declared_length(scope)
        if declared is not None and declared <= self.max_body_size:
            # The server hands the app exactly the declared number of bytes, so Starlette's counting
            # could never refuse this body: skip its per-request responder and the wrappers around
            # receive and send (a tenth of a ticket create's middleware CPU). A route's own limit
            # still applies (its middleware counts by itself then), and its 413 is enveloped here.
            await self.app(scope, receive, enveloped)
        else:
            # A streamed body (or one over the limit): note whether it was read to its end.
            read.done = False
            receive = read.tracking(receive)
            await super().__call__(scope, receive, enveloped)


class _Read:
    """Whether the request body has been read to its end (or the client went away)."""

    def __init__(self, *, done: bool) -> None:
        self.done = done

    def tracking(self, receive: Receive) -> Receive:
        async def tracked() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.done = True
            return message

        return tracked


async def _drain(receive: Receive) -> None:
    """Reads the rest of the request body, within DRAIN_BYTES and DRAIN_S."""
    left = DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            while left > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                left -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def declared_length(scope: Scope) -> int | None:
    """The Content-Length of a request that has no Transfer-Encoding, when it is plain digits."""
    length = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length is not None:
                return None  # repeated: left to Starlette
            length = value
        elif name == b"transfer-encoding":
            return None
    return int(length) if length is not None and length.isdigit() else None
