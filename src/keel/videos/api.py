"""Video routes: `/api/videos` (seed 003), `/api/videos/{id}/retry`, and the HLS files at `/hls/<id>.m3u8`, `/hls/<id>/<n>.ts`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response, StreamingResponse

from keel.core.app import error_responses
from keel.core.events import dumps
from keel.core.identity import Authenticated, Identity
from keel.core.ratelimit import ClientLimits, RateLimiter, address_of
from keel.videos.hls import PLAYLIST_TYPE
from keel.videos.schemas import Video, VideoCreate, VideoCreated
from keel.videos.service import VideoService

JSON = "application/json"
VideoId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def _service(request: Request) -> VideoService:
    service: VideoService = request.app.state.videos
    return service


Service = Annotated[VideoService, Depends(_service)]


async def _creator(request: Request, identity: Authenticated) -> Identity:
    """An authenticated caller within the create limits (per address and per user) and the hourly
    quota of videos per user: every create starts a download and an ffmpeg job."""
    state = request.app.state
    limits: ClientLimits | None = getattr(state, "video_create_limits", None)
    if limits is not None:
        await limits.check(address_of(request), identity.user)
    quota: RateLimiter | None = getattr(state, "video_hourly_quota", None)
    if quota is not None:
        await quota.check(identity.user)
    return identity


Creator = Annotated[Identity, Depends(_creator)]


def build_router() -> APIRouter:
    router = APIRouter(tags=["videos"])

    @router.post(
        "/api/videos",
        status_code=201,
        response_model=VideoCreated,
        summary="Register a video; its HLS is made in the background",
        responses=error_responses(401, 409, 422, 429),
    )
    async def create(body: VideoCreate, service: Service, creator: Creator) -> Response:
        return Response(dumps(await service.create(body, creator.user)), status_code=201, media_type=JSON)

    @router.get(
        "/api/videos/{video_id}",
        response_model=Video,
        summary="Get a video (cached; `X-Cache: hit|miss`)",
        responses=error_responses(401, 403, 404),
    )
    async def get(video_id: VideoId, service: Service, caller: Authenticated) -> Response:
        read = await service.get(video_id, caller)
        return Response(read.body, media_type=JSON, headers={"X-Cache": "hit" if read.cache_hit else "miss"})

    @router.post(
        "/api/videos/{video_id}/retry",
        status_code=202,
        response_model=Video,
        summary="Process a failed video again (back to pending, a new round of attempts)",
        responses=error_responses(401, 403, 404, 409),
    )
    async def retry(video_id: VideoId, service: Service, caller: Authenticated) -> Response:
        return Response(dumps(await service.retry(video_id, caller)), status_code=202, media_type=JSON)

    @router.get(
        "/hls/{video_id}.m3u8",
        summary="The video's HLS playlist",
        response_class=Response,
        responses={200: {"content": {PLAYLIST_TYPE: {}}}, **error_responses(404)},
    )
    async def playlist(video_id: VideoId, service: Service) -> Response:
        return Response(await service.playlist(video_id), media_type=PLAYLIST_TYPE)

    @router.get(
        "/hls/{video_id}/{segment}",
        summary="One MPEG-TS segment of the playlist",
        response_class=StreamingResponse,
        responses={200: {"content": {"video/mp2t": {}}}, **error_responses(404)},
    )
    async def segment(video_id: VideoId, segment: str, service: Service) -> StreamingResponse:
        info, chunks = await service.segment(video_id, segment)
        return StreamingResponse(
            chunks, media_type=info.content_type, headers={"Content-Length": str(info.size)}
        )

    return router
