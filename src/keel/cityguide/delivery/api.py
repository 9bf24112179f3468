"""Delivery prefetch routes: the next audio of a route as signed links (also answered at the edge for
a plain query, keel.core.fastpath), and the CDN-side verifier."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Scope

from keel.cityguide.delivery.schemas import Prefetch
from keel.cityguide.delivery.service import DeliveryService
from keel.core.app import error_responses
from keel.core.fastpath import FastResponse, FastRoute, simple_query
from keel.core.identity import Authenticated, Authenticator
from keel.core.link_guard import LinkGuard, link_guard
from keel.core.storage.object_response import object_response

AUDIO_HEADERS = {"Cache-Control": "private, max-age=60"}


async def _service(request: Request) -> DeliveryService:
    service: DeliveryService = request.app.state.delivery
    return service


Service = Annotated[DeliveryService, Depends(_service)]

PREFETCH_PATH = "/delivery/prefetch"
# The query's bounds, declared once for the FastAPI route and the fast route.
ROUTE_ID_MAX, AFTER_MAX, NEXT_MAX, NEXT_DEFAULT = 200, 128, 50, 3
_PREFETCH_QUERY = frozenset({"route_id", "next", "after"})


def _plain_query(scope: Scope) -> tuple[str, int, str | None] | None:
    """(route_id, next, after) of a plain query within bounds; None for anything the FastAPI route
    must validate (422) exactly as documented."""
    query = simple_query(scope["query_string"], _PREFETCH_QUERY)
    if query is None:
        return None
    route_id, after = query.get("route_id", ""), query.get("after")
    count = query.get("next", str(NEXT_DEFAULT))
    if not (
        0 < len(route_id) <= ROUTE_ID_MAX
        and (after is None or len(after) <= AFTER_MAX)
        and count.isascii()
        and count.isdigit()
        and 1 <= int(count) <= NEXT_MAX
    ):
        return None
    return route_id, int(count), after


def prefetch_fast_route(service: DeliveryService, authenticator: Authenticator) -> FastRoute:
    """The prefetch page at the edge when the query is plain: from this process's recent pages without
    awaiting anything (for a caller known at once), else from the store. Any authenticated caller:
    routes carry no user (seed 001), the route id is the capability."""

    def recent(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        if authenticator.known(scope) is None:
            return None
        query = _plain_query(scope)
        body = None if query is None else service.recent_page(*query)
        return None if body is None else FastResponse(body)

    async def prefetch(scope: Scope, params: dict[str, str]) -> FastResponse | None:
        query = _plain_query(scope)
        if query is None:
            return None
        await authenticator.identify(scope)  # 401 in the envelope from the edge
        return FastResponse(await service.prefetch(*query))

    return FastRoute(PREFETCH_PATH, prefetch, from_memory=recent)


def build_router() -> APIRouter:
    router = APIRouter(tags=["delivery-prefetch"])

    @router.get(
        PREFETCH_PATH,
        response_model=Prefetch,
        summary="Up to `next` ready audio files of a route, in story order, as signed CDN links",
        responses=error_responses(401, 404, 422),
    )
    async def prefetch(
        service: Service,
        _: Authenticated,
        route_id: Annotated[str, Query(min_length=1, max_length=ROUTE_ID_MAX)],
        count: Annotated[
            int, Query(alias="next", ge=1, le=NEXT_MAX, description="how many (1..50)")
        ] = NEXT_DEFAULT,
        after: Annotated[
            str | None,
            Query(min_length=1, max_length=AFTER_MAX, description="the last audio id the client has"),
        ] = None,
    ) -> Response:
        return Response(await service.prefetch(route_id, count, after), media_type="application/json")

    @router.get(
        "/cdn/audio/{audio_id}",
        summary="CDN-side verifier: serves the audio when the link's signature and expiry check out "
        "(HEAD, Range for seeking, ETag)",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"audio/wav": {}}},
            206: {"description": "The byte range asked for with `Range` (`Content-Range` says which)"},
            304: {"description": "`If-None-Match` names the audio's current ETag"},
            **error_responses(403, 404, 410, 416, 429),
        },
    )
    async def audio(
        request: Request,
        service: Service,
        guard: Annotated[LinkGuard, Depends(link_guard)],
        audio_id: Annotated[str, Path(max_length=128)],
        exp: Annotated[str, Query(max_length=20)] = "",
        sig: Annotated[str, Query(max_length=64)] = "",
        kid: Annotated[str, Query(max_length=32)] = "",
    ) -> Response:
        key = await service.verified_audio_key(audio_id, exp, sig, kid or None, guard)
        return await object_response(request, service.objects, key, AUDIO_HEADERS)

    # HEAD answers as GET without the body (players and download managers ask it first); one
    # operation in the OpenAPI document, which describes GET.
    router.add_api_route("/cdn/audio/{audio_id}", audio, methods=["HEAD"], include_in_schema=False)

    return router
