"""What the operator API works with, built once at start-up from the process's infrastructure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keel.cityguide.orchestrator.service import OrchestratorService
from keel.core.db import Database
from keel.ops import lag
from keel.ops.dlq import DeadLetterOps
from keel.ops.topics import TopicAdmin
from keel.ops.workflows import list_workflows

RECENT_FAILURES = 20


@dataclass
class OpsConsole:
    db: Database
    admin: TopicAdmin
    dead_letters: DeadLetterOps
    workflows: OrchestratorService
    services_by_topic: dict[str, str]

    async def list_workflows(
        self, status: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> list[dict[str, Any]]:
        return await list_workflows(self.db, status=status, since=since, until=until, limit=limit)

    async def lag(self) -> dict[str, Any]:
        return {
            "outbox": await lag.outbox_lag(self.db, self.services_by_topic),
            "consumers": await lag.consumer_lag(self.admin),
        }

    async def failures(self) -> dict[str, Any]:
        """The newest dead letters of every DLQ topic and the newest failed workflows."""
        letters = [
            r
            for t in self.dead_letters.topics
            for r in await self.dead_letters.records(t, limit=RECENT_FAILURES)
        ]
        letters.sort(key=lambda r: r["failed_at"], reverse=True)
        failed = await self.list_workflows("failed", None, None, RECENT_FAILURES)
        return {"dead_letters": letters[:RECENT_FAILURES], "workflows": failed}
