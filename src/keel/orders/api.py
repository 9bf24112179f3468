"""Order routes: `GET /order/{order_uid}` (pre-serialised bytes, source and timing in headers; a cache
hit is answered ahead of the FastAPI stack, keel.core.fastpath) and the lookup page at `/` with its
files under `/static/`."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response
from starlette.types import Scope

from keel.core import web
from keel.core.app import error_responses
from keel.core.deps import wired
from keel.core.errors import NotFound
from keel.core.fastpath import FastResponse, FastRoute
from keel.core.identity import Authenticator, Identity, current_identity
from keel.core.ratelimit import address_of
from keel.orders.access import OrderAccess
from keel.orders.schemas import Order
from keel.orders.service import OrderService

JSON = "application/json"
ORDER_PATH = "/order/{order_uid}"
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS_DOC = {
    "X-Source": {"description": "Where the order came from: `cache` or `db`", "schema": {"type": "string"}},
    "X-Duration-ms": {"description": "Server time spent on the request, ms", "schema": {"type": "string"}},
}


Service = Annotated[OrderService, Depends(wired("orders", OrderService))]
Access = Annotated[OrderAccess, Depends(wired("order_access", OrderAccess))]


def _timing(source: str, started: float) -> dict[str, str]:
    return {"X-Source": source, "X-Duration-ms": f"{(time.perf_counter() - started) * 1000:.3f}"}


def order_fast_route(service: OrderService, access: OrderAccess, authenticator: Authenticator) -> FastRoute:
    """`GET /order/{order_uid}` from the cache, ahead of the FastAPI stack: the hot path. A miss and
    any query (`nocache`, or anything to validate) take the FastAPI route; so does, with
    ORDERS_AUTH=user, a caller not known at once or not the order's customer (401/404 there)."""

    async def cached_order(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        started = time.perf_counter()
        body = None if scope["query_string"] else service.cached(params["order_uid"])
        if body is None:
            return None
        if access.user_mode:
            identity = authenticator.known(scope)
            if identity is None or not access.owns(body, identity.user):
                return None
            await access.count_user(identity.user)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return FastResponse(body, headers=[(b"x-source", b"cache"), (b"x-duration-ms", b"%.3f" % elapsed_ms)])

    # Public mode never awaits: no deadline timer. The per-user limit may await Redis.
    return FastRoute(ORDER_PATH, cached_order, awaits_io=access.user_mode)


async def _no_caller() -> None:
    return None


def order_router(orders_auth: str = "none") -> APIRouter:
    """`orders_auth` (ORDERS_AUTH): `user` declares the caller on the route (401 without one)."""
    router = APIRouter(tags=["orders"])
    user_mode = orders_auth == "user"
    caller = current_identity if user_mode else _no_caller
    errors = error_responses(401, 404, 429) if user_mode else error_responses(404, 429)

    @router.get(
        ORDER_PATH,
        response_model=Order,
        summary="Get an order, from the cache unless `nocache=1`",
        responses={200: {"headers": _HEADERS_DOC}, **errors},
    )
    async def get_order(
        order_uid: str,
        request: Request,
        service: Service,
        access: Access,
        nocache: Annotated[bool, Query(description="1: read the database, not the cache")] = False,
        # A default, not an `Annotated` alias: the annotation would name `caller`, a local.
        identity: Identity | None = Depends(caller),
    ) -> Response:
        started = time.perf_counter()
        user = None if identity is None else identity.user
        address = address_of(request)
        await access.before_lookup(address, user)
        try:
            found = await service.get(order_uid, nocache=nocache)
        except NotFound as exc:
            await access.missed(address)
            exc.headers.update(_timing("db", started))
            raise
        if user is not None and not access.owns(found.body, user):
            await access.missed(address)
            # The very answer an unknown uid gets: a stranger learns nothing of this one.
            raise NotFound(f"order {order_uid!r} not found", headers=_timing("db", started))
        return Response(found.body, media_type=JSON, headers=_timing(found.source, started))

    return router


def page_router() -> APIRouter:
    """The lookup page: a few files shipped in the package, read once; nothing else is reachable."""
    return web.page_router("keel.orders", WEB_FILES)
