"""Hot routes answered ahead of the FastAPI stack, whose middlewares, routing, dependencies and
validation cost several times a cached GET's own work, and about as much as a create's own work
(bench/results/changes.md).

A service declares a `FastRoute` (GET) or a `FastPost` (a POST with a JSON body) for the exact path
template of one of its FastAPI routes; the app (keel.core.app) hands every request to `FastEdge` first,
which matches the template and sends the handler's answer with what the full stack would send: the
request id, the route's headers and the metrics under the route's template. The handler returns None
for anything it does not answer exactly as the FastAPI route would (a cache miss, an unusual query, a
body its model refuses): the request then takes the full stack, which stays the one reference for
validation, and reads the body the edge read as if it came from the client. An `AppError` it raises
becomes the usual envelope; anything else gets the edge's last-resort handling (503/504/500), as an
exception escaping a route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from re import Pattern
from typing import ClassVar
from urllib.parse import unquote_plus

from starlette.convertors import StringConvertor
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from keel.core import server_spans
from keel.core.body_limit import declared_length
from keel.core.context import accept_request_id, reset_request_id, set_request_id
from keel.core.envelope import error_body
from keel.core.errors import AppError
from keel.core.middleware import Header, HttpMetrics, request_headers, send_failure, send_response


@dataclass(slots=True)  # not frozen: a frozen init sets each field through object.__setattr__, per request
class FastResponse:
    body: bytes
    status: int = 200
    media_type: bytes = b"application/json"
    # Sent before content-length and content-type, as a Starlette Response sends its own headers.
    headers: list[Header] = field(default_factory=list)


# (scope, path parameters) -> the answer, or None to let the full stack answer.
FastHandler = Callable[[Scope, dict[str, str]], Awaitable[FastResponse | None]]
# The same from memory alone, without awaiting: tried first, so a hit arms no deadline timer.
MemoryHandler = Callable[[Scope, dict[str, str]], FastResponse | None]
# (scope, path parameters, the whole request body) -> the answer, or None.
BodyHandler = Callable[[Scope, dict[str, str], bytes], Awaitable[FastResponse | None]]


@dataclass(frozen=True)
class _Template:
    """`path` is the FastAPI route's template (`/order/{order_uid}`): the edge labels metrics with it."""

    path: str
    _regex: Pattern[str] = field(init=False, repr=False)
    _prefix: str = field(init=False, repr=False)
    method: ClassVar[str]

    def __post_init__(self) -> None:
        regex, _, convertors = compile_path(self.path)
        if not all(isinstance(c, StringConvertor) for c in convertors.values()):
            raise ValueError(f"fast routes take plain string parameters only: {self.path}")
        object.__setattr__(self, "_regex", regex)
        # A cheap test before the regex: most requests are for other routes.
        object.__setattr__(self, "_prefix", self.path.split("{", 1)[0])

    def match(self, path: str) -> dict[str, str] | None:
        if not path.startswith(self._prefix):
            return None
        found = self._regex.match(path)
        return found.groupdict() if found is not None else None


@dataclass(frozen=True)
class FastRoute(_Template):
    """A GET route."""

    handler: FastHandler
    # False for a handler that answers from memory and never awaits: no deadline timer to arm, which
    # is a tenth of such a request's cost. True bounds the handler by REQUEST_TIMEOUT_S (504).
    awaits_io: bool = True
    # For a handler that awaits I/O only on a miss of its own near cache: that cache's lookup.
    from_memory: MemoryHandler | None = None
    method: ClassVar[str] = "GET"


@dataclass(frozen=True)
class FastPost(_Template):
    """A POST route taking a JSON body of at most `max_body_bytes` (the FastAPI route's limit), sent
    with its length: the edge reads it before the handler. A longer or chunked body, or any other
    content type, is left unread for the full stack (its 413, its 422). The handler runs under the
    deadline."""

    handler: BodyHandler
    max_body_bytes: int
    method: ClassVar[str] = "POST"


Fast = FastRoute | FastPost


class FastRoutes:
    """The table the edge consults; filled when the services are wired (their handlers need the use
    cases built then), empty until then, so early requests simply take the full stack."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[Fast, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self._routes)

    def add(self, routes: Iterable[Fast], served: Iterable[tuple[str, str]]) -> None:
        """`served`: the (method, template) pairs the FastAPI app routes; a fast route must shadow one
        of them exactly, so that falling through always reaches the route it stands in for."""
        known = set(served)
        for route in routes:
            if (route.method, route.path) not in known:
                raise ValueError(
                    f"fast route {route.path} has no FastAPI {route.method} route with that template"
                )
            self._routes[route.method] = (*self._routes.get(route.method, ()), route)

    def clear(self) -> None:
        self._routes = {}

    def match(self, scope: Scope) -> tuple[Fast, dict[str, str]] | None:
        routes = self._routes.get(scope["method"])
        if routes is None or scope.get("root_path"):
            return None
        path = scope["path"]
        for route in routes:
            params = route.match(path)
            if params is not None:
                return route, params
        return None


def raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as a Starlette `Response(headers=...)` sends them."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def error_response(exc: AppError, request_id: str) -> FastResponse:
    """The envelope the app's AppError handler (keel.core.envelope) sends, with the same headers."""
    body = error_body(exc.code, exc.message, exc.details, request_id=request_id)
    return FastResponse(body, exc.status_code, headers=raw_headers(exc.headers))


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), as Starlette's `Headers.get` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def simple_query(query_string: bytes, names: frozenset[str]) -> dict[str, str] | None:
    """The query as a dict when it is plain: only `names`, each at most once, none blank. None for
    anything else (repeats, unknown or blank parameters, non-ASCII bytes): the full stack decides
    those, so the fast path never has to agree with its parser on the odd cases."""
    if not query_string:
        return {}
    if not query_string.isascii():
        return None
    values: dict[str, str] = {}
    for pair in query_string.decode("ascii").split("&"):
        name, sep, value = pair.partition("=")
        if not sep or not value or name not in names or name in values:
            return None
        if "%" in value or "+" in value:
            value = unquote_plus(value)  # what Starlette's parse_qsl does
        values[name] = value
    return values


class FastEdge:
    """Answers the fast routes with what EdgeMiddleware gives every request: a request id (header and
    log context), the deadline, the golden-signal metrics and the envelope for every error."""

    def __init__(self, routes: FastRoutes, *, timeout_s: float, metrics: HttpMetrics) -> None:
        self.routes = routes
        self.timeout_s = timeout_s
        self.metrics = metrics

    def match(self, scope: Scope) -> tuple[Fast, dict[str, str]] | None:
        return self.routes.match(scope) if self.routes else None

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        matched: tuple[Fast, dict[str, str]] | None = None,
        span: server_spans.server_span | None = None,
    ) -> Receive | None:
        """None when a fast route answered. Else nothing was sent or counted, and the app answers,
        reading the request from the receive returned (it replays a body the edge read first).
        `span`: the request's server span (tracing on), named and closed out here when it answers."""
        matched = matched or self.match(scope)
        if matched is None:
            return receive
        route, params = matched
        if isinstance(route, FastPost) and not _takes_body(route, scope):
            return receive
        request_id = accept_request_id(request_headers(scope)[0])
        token = set_request_id(request_id)
        rid_header = (b"x-request-id", request_id.encode())
        begin = time.perf_counter()
        in_flight = self.metrics.in_flight
        in_flight.count += 1
        read: list[Message] = []
        try:
            deadline = None
            try:
                if isinstance(route, FastPost):
                    async with asyncio.timeout(self.timeout_s) as deadline:
                        body = await _read_body(receive, read)
                        answer = None if body is None else await route.handler(scope, params, body)
                else:
                    answer = None if route.from_memory is None else route.from_memory(scope, params)
                    if answer is None and route.awaits_io:
                        async with asyncio.timeout(self.timeout_s) as deadline:
                            answer = await route.handler(scope, params)
                    elif answer is None:
                        answer = await route.handler(scope, params)
            except AppError as exc:
                answer = error_response(exc, request_id)
            except Exception as exc:
                expired = deadline is not None and deadline.expired()
                status = await send_failure(send, exc, expired, self.timeout_s, rid_header)
                self.metrics.observe(route.method, route.path, status, time.perf_counter() - begin, span)
                return None
            if answer is None:
                return _replaying(read, receive) if read else receive
            try:
                await send_response(
                    send, answer.status, answer.body, answer.media_type, answer.headers, rid_header
                )
            finally:
                self.metrics.observe(
                    route.method, route.path, answer.status, time.perf_counter() - begin, span
                )
            return None
        finally:
            in_flight.count -= 1
            reset_request_id(token)


def _takes_body(route: FastPost, scope: Scope) -> bool:
    """A JSON body whose declared length is within the route's limit."""
    length = declared_length(scope)
    if length is None or length > route.max_body_bytes:
        return False
    content_type = header(scope, b"content-type")
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


async def _read_body(receive: Receive, read: list[Message]) -> bytes | None:
    """The whole body, each message kept in `read` for a replay; None if the client left first."""
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None
        if not message.get("more_body", False):
            break
    return b"".join(m.get("body", b"") for m in read)


def _replaying(read: list[Message], receive: Receive) -> Receive:
    """`receive` as the app would have seen it untouched: the messages the edge read, then the rest."""
    pending = list(read)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
