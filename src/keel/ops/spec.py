"""The operator console as a service: `/ops` API and page, served by `keel up` beside every service
and by `keel serve console` in production. It consumes nothing; a workflow restart writes to the
outbox, so it runs a relay like any service that does.

* `GET /ops/` the page; `GET /ops/workflows`, `/ops/workflows/{route_id}`, `POST .../restart`;
  `GET /ops/dlq`, `/ops/dlq/{topic}/records`, `/ops/dlq/records/{topic}/{partition}/{offset}`,
  `POST /ops/dlq/{topic}/replay`, `/ops/dlq/{topic}/purge`; `GET /ops/audit`, `/ops/lag`, `/ops/failures`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from keel import services
from keel.cityguide.orchestrator.service import OrchestratorService
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring
from keel.ops.api import api_router, page_router
from keel.ops.audit import Audit
from keel.ops.catalog import dead_letter_topics
from keel.ops.console import OpsConsole
from keel.ops.dlq import DeadLetterOps
from keel.ops.gauges import DeadLetterGauge
from keel.ops.topics import topic_admin

NAME = "console"
# dlq_pending is refreshed this often; the alert rules wait far longer than that (deploy/prometheus).
GAUGE_INTERVAL_S = 30.0


def routers() -> Sequence[APIRouter]:
    return [api_router(), page_router()]


def _services_by_topic() -> dict[str, str]:
    return {t: s.name for s in services.load_all() if s.name != NAME for t in s.topics}


async def wire(infra: Infra) -> Wiring:
    db = infra.require_db()
    admin = topic_admin(infra.bus)
    producer = infra.bus.producer()
    await producer.start()
    dead_letters = DeadLetterOps(admin, producer, dead_letter_topics(), Audit(db))
    console = OpsConsole(db, admin, dead_letters, OrchestratorService(db, infra.outbox), _services_by_topic())
    return Wiring(
        state={"ops_console": console},
        workers=[DeadLetterGauge(dead_letters, GAUGE_INTERVAL_S)],
        closers=[producer.stop, admin.close],
    )


SPEC = ServiceSpec(
    name=NAME,
    title="Operator console",
    routers=routers,
    wire=wire,
    topics=tuple(dead_letter_topics()),
    uses_outbox=True,
    description=__doc__ or "",
)
