"""The HTTP app factory every service uses: one envelope, one edge, the same health routes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field, ValidationError
from starlette.types import Message, Receive, Scope, Send

from keel import __version__
from keel.core import server_spans, telemetry
from keel.core.body_limit import EnvelopedBodyLimitMiddleware
from keel.core.bus.errors import BrokerUnavailable
from keel.core.docs import install_offline_docs
from keel.core.envelope import install_error_handlers
from keel.core.errors import StartupError
from keel.core.fastpath import FastEdge, FastRoutes
from keel.core.health import ReadinessCheck, health_router
from keel.core.identity import Authenticator, build_authenticator
from keel.core.middleware import ADOPTED_SPAN, EdgeMiddleware, HttpMetrics
from keel.core.settings import Settings, invalid_settings


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code")
    message: str = Field(description="What went wrong, for a human")
    request_id: str | None = Field(description="The X-Request-Id of the request; quote it when reporting")
    details: Any = Field(default=None, description="Field errors (422) or other structured detail")


class ErrorEnvelope(BaseModel):
    """Every error of every Keel service has this shape."""

    error: ErrorBody


class KeelApp(FastAPI):
    """FastAPI whose fast routes (keel.core.fastpath) are answered before its middleware stack."""

    fast_edge: FastEdge | None = None
    # `keel --debug` turns it off: a failed start-up then shows its whole traceback.
    one_line_startup_errors = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.fast_edge
        if edge is not None and scope["type"] == "http":
            matched = edge.match(scope)
            if matched is not None and telemetry.enabled():
                # Traced like any request: one server span, which the stack takes over (ADOPTED_SPAN)
                # when the fast route declines (a cache miss) and the app answers instead.
                with server_spans.server_span(scope) as span:
                    rest = await edge(scope, receive, send, matched, span)
                    if rest is None:
                        return
                    scope.setdefault("state", {})[ADOPTED_SPAN] = span
                    await super().__call__(scope, rest, send)
                return
            if matched is not None:
                rest = await edge(scope, receive, send, matched)
                if rest is None:
                    return
                receive = rest
        if scope["type"] == "lifespan" and self.one_line_startup_errors:
            send = _startup_failure_in_one_line(send)
        await super().__call__(scope, receive, send)


def _startup_failure_in_one_line(send: Send) -> Send:
    """Starlette reports a failed start-up to the server with the whole traceback, which the server
    logs. For a StartupError the operator needs its message alone: what is wrong, which setting fixes
    it. Starlette sends the failure while it handles the exception, so the exception is at hand here."""

    async def send_one_line(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            failure = sys.exc_info()[1]
            while failure is not None and not _reads_in_one_line(failure):
                failure = failure.__cause__ or failure.__context__
            if isinstance(failure, ValidationError):
                message = {**message, "message": "; ".join(invalid_settings(failure))}
            elif isinstance(failure, BrokerUnavailable):
                # A process whose start needs the broker (a worker's producer): what failed, where.
                message = {**message, "message": f"{failure}; check KAFKA_BROKERS and that the broker is up"}
            elif failure is not None:
                message = {**message, "message": str(failure)}
        await send(message)

    return send_one_line


def _reads_in_one_line(failure: BaseException) -> bool:
    """A StartupError, a service's settings that do not validate (read in its wiring), or a broker
    that did not answer a process that cannot start without it."""
    if isinstance(failure, ValidationError):
        return failure.title.endswith("Settings")
    return isinstance(failure, StartupError | BrokerUnavailable)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return (one shared schema)."""
    return {s: {"model": ErrorEnvelope, "description": HTTPStatus(s).phrase} for s in statuses}


def create_app(
    *,
    title: str,
    settings: Settings,
    routers: Sequence[APIRouter] = (),
    readiness: Callable[[], Sequence[ReadinessCheck]] = lambda: (),
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    description: str = "",
    max_route_body_bytes: int | None = None,
    fast_routes: FastRoutes | None = None,
    liveness_aliases: Sequence[str] = (),
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """`max_route_body_bytes`: the largest body any route accepts (upload routes set their own limit);
    `fast_routes`: routes answered before the FastAPI stack (filled once the services are wired);
    `liveness_aliases`: paths answering as `/healthz` (keel.core.health.SEED_LIVENESS_PATHS);
    `authenticator`: who the callers are (keel.core.identity), by default built from `settings`."""
    app = KeelApp(
        title=title,
        version=__version__,
        description=description,
        lifespan=lifespan,
        responses=error_responses(422, 500, 503, 504),
        # The edge makes the one server span per request (keel.core.spans); FastAPI's own telemetry
        # would make a second, outside the edge, for every request the edge leaves untraced too.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
        docs_url=None,  # FastAPI's pages load their assets from a CDN: ours are served here
        redoc_url=None,
    )
    # Built here, before anything serves: a jwt configuration that cannot work stops the start.
    app.state.authenticator = authenticator or build_authenticator(settings)
    install_offline_docs(app)
    install_error_handlers(app)
    # Inside the edge: counts streamed bodies; a route's own `max_body_size` overrides it (uploads).
    app.add_middleware(EnvelopedBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    metrics = HttpMetrics(access_log=settings.access_log)
    app.state.http_metrics = metrics  # its in-flight count feeds keel.core.saturation
    app.add_middleware(
        EdgeMiddleware,
        timeout_s=settings.request_timeout_s,
        max_body_bytes=max(settings.max_body_bytes, max_route_body_bytes or 0),
        metrics=metrics,
    )
    if fast_routes is not None:
        app.fast_edge = FastEdge(fast_routes, timeout_s=settings.request_timeout_s, metrics=metrics)
    app.include_router(health_router(readiness, liveness_aliases))
    for router in routers:
        app.include_router(router)
    return app
