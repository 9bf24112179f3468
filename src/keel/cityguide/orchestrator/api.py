"""Orchestrator routes: look at a route's workflow, restart its TTS batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from keel.cityguide.orchestrator.schemas import RestartableStep, RestartRequest, Workflow
from keel.cityguide.orchestrator.service import OrchestratorService
from keel.core.app import error_responses
from keel.core.auth import CurrentUser

RouteId = Annotated[str, Path(min_length=1, max_length=200)]


async def _service(request: Request) -> OrchestratorService:
    service: OrchestratorService = request.app.state.orchestrator
    return service


Service = Annotated[OrchestratorService, Depends(_service)]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/workflows", tags=["orchestrator"])

    @router.get(
        "/{route_id}",
        summary="A route's workflow: state, steps, TTS jobs, restarts",
        responses=error_responses(404),
    )
    async def get_workflow(route_id: RouteId, service: Service) -> Workflow:
        return await service.get(route_id)

    @router.post(
        "/{route_id}/restart",
        status_code=202,
        summary="Restart a step: back to pending, attempts + 1, unfinished TTS jobs requested again",
        responses=error_responses(401, 404, 409, 422),
    )
    async def restart(
        route_id: RouteId,
        service: Service,
        user: CurrentUser,
        step: Annotated[RestartableStep, Query(description="the step to restart")],
        body: Annotated[RestartRequest | None, Body()] = None,
    ) -> Workflow:
        return await service.restart(route_id, step, user, body.reason if body else None)

    return router
