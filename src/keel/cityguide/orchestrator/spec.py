"""How the platform wires the orchestrator: its routes, its three consumers and the outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter

from keel.cityguide import topics
from keel.cityguide.orchestrator.api import build_router
from keel.cityguide.orchestrator.messages import inbox_key
from keel.cityguide.orchestrator.service import OrchestratorService
from keel.cityguide.orchestrator.settings import OrchestratorSettings
from keel.core.consumer import Batch, ConsumerOptions, ConsumerRunner
from keel.core.db import UnitOfWork
from keel.core.events import Event
from keel.core.infra import Infra
from keel.core.ratelimit import ClientLimits, shared_storage
from keel.core.service import ServiceSpec, Wiring

GROUP = "orchestrator"
# Events handled in one transaction (one inbox claim, a few set-based statements, one commit). Small
# enough that the route locks a batch holds do not keep another partition's batch waiting long.
BATCH_SIZE = 50

DESCRIPTION = """Cityguide orchestrator (seed 001): a workflow per route in PostgreSQL.

`route.confirmed` → `story.generate` → `story.generate.completed` → one `tts.requested` per story →
`tts.completed` → `delivery.prefetch`. Every event it emits is written through the outbox in the
transaction of the state change. Duplicates are no-ops; events that arrive early are parked, not lost.

* Callers: reads need an authenticated caller (`X-User-Id`, or a bearer token with `AUTH_MODE=jwt`),
  within `WORKFLOW_READ_LIMIT` per user (429 with `Retry-After`); a restart needs the role `operator`
  (403 without it). See docs/security.md.
* `GET /workflows/{route_id}`: state, steps (`story_generate`, `tts_batch`, `delivery`), TTS jobs in
  story order, restarts. 404 for an unknown route.
* `POST /workflows/{route_id}/restart?step=tts_batch` (an operator, optional `{"reason"}`): the step
  back to pending with attempts + 1, an audit entry, `tts.requested` again for the unfinished jobs → 202.
  Unknown step 422, unknown route 404, a step that has not started or is already completed 409.
"""

HandleBatch = Callable[[Sequence[Event], UnitOfWork], Awaitable[None]]


def routers() -> Sequence[APIRouter]:
    return [build_router()]


def _consumer(infra: Infra, topic: str, handle: HandleBatch) -> ConsumerRunner:
    # A batch that fails is redone one event at a time by the runner, so one bad event stands alone.
    return ConsumerRunner(
        infra.bus,
        group_id=f"{GROUP}.{topic}",
        topics=[topic],
        wire="bare",
        handler=Batch(handle, natural_key=lambda e: inbox_key(topic, e.payload)),
        db=infra.require_db(),
        dlq_topic=topics.DLQ,
        default_event_type=topic,
        options=ConsumerOptions.from_settings(infra.settings, batch_size=BATCH_SIZE),
    )


async def wire(infra: Infra) -> Wiring:
    service = OrchestratorService(infra.require_db(), infra.outbox)
    settings = OrchestratorSettings()
    limits = ClientLimits(
        "workflow-reads",
        shared_storage(infra.settings),
        per_address=settings.workflow_read_address_limit,
        per_user=settings.workflow_read_limit,
    )
    wiring = Wiring(state={"orchestrator": service, "workflow_read_limits": limits})
    wiring.workers += [
        _consumer(infra, topics.ROUTE_CONFIRMED, service.on_route_confirmed),
        _consumer(infra, topics.STORY_GENERATED, service.on_stories_generated),
        _consumer(infra, topics.TTS_COMPLETED, service.on_tts_completed),
    ]
    return wiring


SPEC = ServiceSpec(
    name="orchestrator",
    title="Cityguide orchestrator",
    routers=routers,
    wire=wire,
    topics=(
        topics.ROUTE_CONFIRMED,
        topics.STORY_GENERATE,
        topics.STORY_GENERATED,
        topics.TTS_REQUESTED,
        topics.TTS_COMPLETED,
        topics.DELIVERY_PREFETCH,
        topics.DLQ,
    ),
    uses_outbox=True,
    description=DESCRIPTION,
)
