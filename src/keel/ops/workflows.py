"""The cityguide workflows as an operator lists them: by status and time, newest first, with the
error of the step that failed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keel.core.db import Database

LIST_WORKFLOWS = """
SELECT w.route_id, w.mode, w.status, w.created_at, w.updated_at, w.completed_at,
       (SELECT s.step || ': ' || coalesce(s.error, 'failed') FROM cityguide_workflow_steps s
         WHERE s.route_id = w.route_id AND s.status = 'failed' ORDER BY s.position LIMIT 1) AS failure,
       (SELECT coalesce(max(s.attempts), 0) FROM cityguide_workflow_steps s WHERE s.route_id = w.route_id)
         AS attempts
  FROM cityguide_workflows w
 WHERE ($1::text IS NULL OR w.status = $1)
   AND ($2::timestamptz IS NULL OR w.created_at >= $2)
   AND ($3::timestamptz IS NULL OR w.created_at < $3)
 ORDER BY w.created_at DESC, w.route_id
 LIMIT $4
"""


async def list_workflows(
    db: Database, *, status: str | None, since: datetime | None, until: datetime | None, limit: int
) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(LIST_WORKFLOWS, status, since, until, limit)
    return [
        {
            **{k: r[k] for k in ("route_id", "mode", "status", "failure", "attempts")},
            **{k: r[k].isoformat() if r[k] else None for k in ("created_at", "updated_at", "completed_at")},
        }
        for r in rows
    ]
