"""Orchestrator routes: look at a route's workflow, restart its TTS batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from keel.cityguide.orchestrator.schemas import RestartableStep, RestartRequest, Workflow
from keel.cityguide.orchestrator.service import OrchestratorService
from keel.core.app import error_responses
from keel.core.identity import Authenticated, Identity, Operator
from keel.core.ratelimit import ClientLimits, address_of

RouteId = Annotated[str, Path(min_length=1, max_length=200)]


async def _service(request: Request) -> OrchestratorService:
    service: OrchestratorService = request.app.state.orchestrator
    return service


Service = Annotated[OrchestratorService, Depends(_service)]


async def _reader(request: Request, identity: Authenticated) -> Identity:
    """Any authenticated caller, within WORKFLOW_READ_LIMIT (per user) and its per-address limit."""
    limits: ClientLimits | None = getattr(request.app.state, "workflow_read_limits", None)
    if limits is not None:
        await limits.check(address_of(request), identity.user)
    return identity


Reader = Annotated[Identity, Depends(_reader)]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/workflows", tags=["orchestrator"])

    @router.get(
        "/{route_id}",
        summary="A route's workflow: state, steps, TTS jobs, restarts",
        responses=error_responses(401, 404, 429),
    )
    async def get_workflow(route_id: RouteId, service: Service, _: Reader) -> Workflow:
        return await service.get(route_id)

    @router.post(
        "/{route_id}/restart",
        status_code=202,
        summary="Restart a step: back to pending, attempts + 1, unfinished TTS jobs requested again",
        responses=error_responses(401, 403, 404, 409, 422),
    )
    async def restart(
        route_id: RouteId,
        service: Service,
        operator: Operator,
        step: Annotated[RestartableStep, Query(description="the step to restart")],
        body: Annotated[RestartRequest | None, Body()] = None,
    ) -> Workflow:
        return await service.restart(route_id, step, operator.user, body.reason if body else None)

    return router
