"""Delivery prefetch routes: the next audio of a route as signed links, and the CDN-side verifier."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import StreamingResponse

from keel.cityguide.delivery.schemas import Prefetch
from keel.cityguide.delivery.service import DeliveryService
from keel.core.app import error_responses
from keel.core.link_guard import LinkGuard, link_guard


async def _service(request: Request) -> DeliveryService:
    service: DeliveryService = request.app.state.delivery
    return service


Service = Annotated[DeliveryService, Depends(_service)]


def build_router() -> APIRouter:
    router = APIRouter(tags=["delivery-prefetch"])

    @router.get(
        "/delivery/prefetch",
        summary="Up to `next` ready audio files of a route, in story order, as signed CDN links",
        responses=error_responses(404, 422),
    )
    async def prefetch(
        service: Service,
        route_id: Annotated[str, Query(min_length=1, max_length=200)],
        count: Annotated[int, Query(alias="next", ge=1, le=50, description="how many (1..50)")] = 3,
        after: Annotated[
            str | None, Query(min_length=1, max_length=128, description="the last audio id the client has")
        ] = None,
    ) -> Prefetch:
        return await service.prefetch(route_id, count, after)

    @router.get(
        "/cdn/audio/{audio_id}",
        summary="CDN-side verifier: serves the audio when the link's signature and expiry check out",
        response_class=StreamingResponse,
        responses={200: {"content": {"audio/wav": {}}}, **error_responses(403, 404, 410, 429)},
    )
    async def audio(
        service: Service,
        guard: Annotated[LinkGuard, Depends(link_guard)],
        audio_id: Annotated[str, Path(max_length=128)],
        exp: Annotated[str, Query(max_length=20)] = "",
        sig: Annotated[str, Query(max_length=64)] = "",
        kid: Annotated[str, Query(max_length=32)] = "",
    ) -> StreamingResponse:
        info, chunks = await service.open_audio(audio_id, exp, sig, kid or None, guard)
        return StreamingResponse(
            chunks,
            media_type=info.content_type,
            headers={"Content-Length": str(info.size), "Cache-Control": "private, max-age=60"},
        )

    return router
