"""`/ops`: the operator API (workflows, dead letters, lag, failures) and the console page over it.
Every route passes `require_operator`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from keel.cityguide.orchestrator.schemas import RestartableStep, Workflow
from keel.core import web
from keel.core.app import error_responses
from keel.core.errors import Unprocessable
from keel.ops.access import require_operator
from keel.ops.console import OpsConsole
from keel.ops.records import Selection
from keel.ops.schemas import DeadLetterSelection, PurgeRequest, ReplayRequest, WorkflowRestart

Operator = Annotated[str, Depends(require_operator)]
Status = Literal["pending", "running", "completed", "failed"]
DENIED = error_responses(403)
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript",
    "console.css": "text/css",
}


def _console(request: Request) -> OpsConsole:
    console: OpsConsole = request.app.state.ops_console
    return console


Console = Annotated[OpsConsole, Depends(_console)]
Json = dict[str, Any]


def _selected(body: DeadLetterSelection) -> Selection:
    if body.is_empty():
        raise Unprocessable("name records (ids) or a filter (reason, source_topic, since, until), or set all")
    return body.selection()


def api_router() -> APIRouter:
    router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[Depends(require_operator)])
    _workflow_routes(router)
    _dead_letter_routes(router)
    _overview_routes(router)
    return router


def _workflow_routes(router: APIRouter) -> None:
    """The cityguide workflows: listed, read, a step restarted."""

    @router.get(
        "/workflows", summary="Workflows, newest first, by status and creation time", responses=DENIED
    )
    async def workflows(
        console: Console,
        status: Status | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[Json]:
        return await console.list_workflows(status, since, until, limit)

    @router.get(
        "/workflows/{route_id}",
        summary="One workflow: steps, TTS jobs, attempts, restart audit",
        responses=error_responses(403, 404),
    )
    async def workflow(console: Console, route_id: Annotated[str, Path(max_length=200)]) -> Workflow:
        return await console.workflows.get(route_id)

    @router.post(
        "/workflows/{route_id}/restart",
        status_code=202,
        summary="Restart a workflow's step (its unfinished TTS jobs are requested again)",
        responses=error_responses(403, 404, 409, 422),
    )
    async def restart(
        console: Console,
        operator: Operator,
        route_id: Annotated[str, Path(max_length=200)],
        step: RestartableStep = RestartableStep.TTS_BATCH,
        body: WorkflowRestart | None = None,
    ) -> Workflow:
        return await console.workflows.restart(route_id, step, operator, body.reason if body else None)


def _dead_letter_routes(router: APIRouter) -> None:
    """The dead-letter topics: summed up, listed, read, replayed, purged."""

    @router.get(
        "/dlq", summary="Per DLQ topic: pending count, oldest, newest, by reason, by source", responses=DENIED
    )
    async def dead_letter_topics(console: Console) -> list[Json]:
        return await console.dead_letters.summaries()

    @router.get(
        "/dlq/{topic}/records",
        summary="A DLQ topic's records, newest first",
        responses=error_responses(403, 404),
    )
    async def records(
        console: Console,
        topic: str,
        reason: str | None = None,
        source_topic: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_replayed: bool = False,
        limit: Annotated[int, Query(ge=1, le=1_000_000)] = 200,
    ) -> list[Json]:
        selection = Selection(reason=reason, source_topic=source_topic, since=since, until=until)
        return await console.dead_letters.records(
            topic, selection, include_done=include_replayed, limit=limit
        )

    @router.get(
        "/dlq/records/{topic}/{partition}/{offset}",
        summary="One dead letter: reason, error, attempts, source, headers, key, payload",
        responses=error_responses(403, 404),
    )
    async def record(console: Console, topic: str, partition: int, offset: int) -> Json:
        return await console.dead_letters.show(f"{topic}/{partition}/{offset}")

    @router.post(
        "/dlq/{topic}/replay",
        summary="Send dead letters back to their source topic (safe to repeat)",
        responses=error_responses(403, 404, 422),
    )
    async def replay(console: Console, operator: Operator, topic: str, body: ReplayRequest) -> Json:
        payload = body.payload.encode() if body.payload is not None else None
        outcome = await console.dead_letters.replay(topic, _selected(body), actor=operator, payload=payload)
        return outcome.view()

    @router.post(
        "/dlq/{topic}/purge",
        summary="Mark dead letters as dealt with, without replaying them",
        responses=error_responses(403, 404, 422),
    )
    async def purge(console: Console, operator: Operator, topic: str, body: PurgeRequest) -> Json:
        outcome = await console.dead_letters.purge(topic, _selected(body), actor=operator, delete=body.delete)
        return outcome.view()


def _overview_routes(router: APIRouter) -> None:
    """What an operator looks at first: the audit of replays and purges, lag, the newest failures."""

    @router.get(
        "/audit", summary="The latest replays and purges: who, when, what, how many", responses=DENIED
    )
    async def audit(console: Console) -> list[Json]:
        return await console.dead_letters.audit()

    @router.get(
        "/lag",
        summary="Outbox events pending per topic, consumer lag per group and partition",
        responses=DENIED,
    )
    async def lag(console: Console) -> Json:
        return await console.lag()

    @router.get("/failures", summary="The newest dead letters and failed workflows", responses=DENIED)
    async def failures(console: Console) -> Json:
        return await console.failures()


def page_router() -> APIRouter:
    """The console page: files shipped in the package, read once; no CDN."""
    return web.page_router("keel.ops", WEB_FILES, prefix="/ops", dependencies=[Depends(require_operator)])
