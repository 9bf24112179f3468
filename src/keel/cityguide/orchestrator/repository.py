"""The orchestrator's SQL: every statement it runs, on the unit of work's driver connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from keel.core.events import dumps

STEPS = ("story_generate", "tts_batch", "delivery")

# Serialises every handler and the restart for one route (tts.completed for one route arrives on
# several partitions at once), including handlers that only park an event for a route not known yet.
LOCK_ROUTE = "SELECT pg_advisory_xact_lock(hashtextextended('cityguide:' || $1, 0))"

# The workflow and its steps in one round trip; no steps when the workflow existed already.
INSERT_WORKFLOW = """
WITH w AS (
    INSERT INTO cityguide_workflows (route_id, mode, lang, status, route, confirmed_at)
    VALUES ($1, $2, $3, 'running', $4::text::jsonb, $5)
    ON CONFLICT (route_id) DO NOTHING
    RETURNING route_id
), steps AS (
    INSERT INTO cityguide_workflow_steps (route_id, step, position, status, attempts, started_at)
    SELECT w.route_id, s.step, s.n, CASE WHEN s.n = 1 THEN 'running' ELSE 'pending' END,
           CASE WHEN s.n = 1 THEN 1 ELSE 0 END, CASE WHEN s.n = 1 THEN now() END
    FROM w CROSS JOIN unnest($6::text[]) WITH ORDINALITY AS s(step, n)
)
SELECT route_id FROM w
"""

SELECT_WORKFLOW = "SELECT * FROM cityguide_workflows WHERE route_id = $1"
SELECT_STEPS = "SELECT * FROM cityguide_workflow_steps WHERE route_id = $1 ORDER BY position"
SELECT_STEP = "SELECT * FROM cityguide_workflow_steps WHERE route_id = $1 AND step = $2"
SELECT_JOBS = "SELECT * FROM cityguide_tts_jobs WHERE route_id = $1 ORDER BY position"
SELECT_JOB = "SELECT * FROM cityguide_tts_jobs WHERE route_id = $1 AND story_id = $2"
SELECT_RESTARTS = "SELECT * FROM cityguide_workflow_restarts WHERE route_id = $1 ORDER BY id"
COUNT_JOBS = "SELECT count(*) FROM cityguide_tts_jobs WHERE route_id = $1"

INSERT_JOBS = """
INSERT INTO cityguide_tts_jobs (route_id, story_id, position, title, text, status, attempt)
SELECT $1, j.story_id, j.position, j.title, j.text, 'pending', 1
FROM unnest($2::text[], $3::int[], $4::text[], $5::text[]) AS j(story_id, position, title, text)
RETURNING *
"""

UPDATE_STEP = """
UPDATE cityguide_workflow_steps
SET status = $3, attempts = attempts + $4, error = $5,
    started_at = CASE WHEN $6 THEN now() ELSE started_at END,
    finished_at = CASE WHEN $3 IN ('completed', 'failed') THEN now() END
WHERE route_id = $1 AND step = $2
"""

UPDATE_WORKFLOW = """
UPDATE cityguide_workflows
SET status = $2, updated_at = now(), completed_at = CASE WHEN $2 = 'completed' THEN now() END
WHERE route_id = $1
"""

# A completed job in one round trip: the job, the route's first audio (when it is the first), the batch
# step back to running when a restart left it pending, and how many other jobs are not completed yet.
# Data-modifying CTEs all run, whether or not the outer query reads them; the count reads the
# statement's snapshot, which is why it leaves this job out rather than relying on its update.
COMPLETE_JOB = """
WITH done AS (
    UPDATE cityguide_tts_jobs
    SET status = 'completed', audio_id = $3, duration_s = $4, error = NULL, updated_at = now()
    WHERE route_id = $1 AND story_id = $2
    RETURNING story_id
), first AS (
    UPDATE cityguide_workflows SET first_audio_at = $5, updated_at = now()
    WHERE route_id = $1 AND first_audio_at IS NULL
    RETURNING confirmed_at
), resumed AS (
    UPDATE cityguide_workflow_steps
    SET status = 'running', error = NULL, finished_at = NULL
    WHERE route_id = $1 AND step = 'tts_batch' AND status = 'pending'
    RETURNING step
)
SELECT (SELECT confirmed_at FROM first) AS confirmed_at,
       (SELECT count(*) FROM cityguide_tts_jobs
        WHERE route_id = $1 AND story_id <> $2 AND status <> 'completed') AS unfinished
"""

FINISH_JOB = """
UPDATE cityguide_tts_jobs
SET status = $3, audio_id = $4, duration_s = $5, error = $6, updated_at = now()
WHERE route_id = $1 AND story_id = $2
"""

REQUEUE_JOBS = """
UPDATE cityguide_tts_jobs
SET status = 'pending', attempt = $2, error = NULL, updated_at = now()
WHERE route_id = $1 AND status <> 'completed'
RETURNING *
"""

INSERT_RESTART = """
INSERT INTO cityguide_workflow_restarts (route_id, step, attempt, requested_by, reason)
VALUES ($1, $2, $3, $4, $5)
"""

PARK = "INSERT INTO cityguide_parked_events (route_id, kind, payload) VALUES ($1, $2, $3::text::jsonb)"
UNPARK = """
DELETE FROM cityguide_parked_events WHERE route_id = $1 AND kind = $2
RETURNING id, payload::text AS payload
"""


async def lock_route(conn: asyncpg.Connection, route_id: str) -> None:
    await conn.execute(LOCK_ROUTE, route_id)


async def insert_workflow(
    conn: asyncpg.Connection,
    route_id: str,
    mode: str,
    lang: str,
    route: dict[str, Any],
    confirmed_at: datetime,
) -> bool:
    created = await conn.fetchval(
        INSERT_WORKFLOW, route_id, mode, lang, dumps(route).decode(), confirmed_at, list(STEPS)
    )
    return created is not None


async def workflow(conn: asyncpg.Connection, route_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(SELECT_WORKFLOW, route_id)
    return row


async def step(conn: asyncpg.Connection, route_id: str, name: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(SELECT_STEP, route_id, name)
    return row


async def steps(conn: asyncpg.Connection, route_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SELECT_STEPS, route_id))


async def jobs(conn: asyncpg.Connection, route_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SELECT_JOBS, route_id))


async def job(conn: asyncpg.Connection, route_id: str, story_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(SELECT_JOB, route_id, story_id)
    return row


async def restarts(conn: asyncpg.Connection, route_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(SELECT_RESTARTS, route_id))


async def has_jobs(conn: asyncpg.Connection, route_id: str) -> bool:
    return bool(await conn.fetchval(COUNT_JOBS, route_id))


async def insert_jobs(
    conn: asyncpg.Connection, route_id: str, stories: Sequence[dict[str, Any]]
) -> list[asyncpg.Record]:
    """The new jobs, in story order."""
    rows = await conn.fetch(
        INSERT_JOBS,
        route_id,
        [s["story_id"] for s in stories],
        [s["position"] for s in stories],
        [s["title"] for s in stories],
        [s["text"] for s in stories],
    )
    return sorted(rows, key=lambda r: r["position"])


async def set_step(
    conn: asyncpg.Connection,
    route_id: str,
    name: str,
    status: str,
    *,
    add_attempt: bool = False,
    error: str | None = None,
    started: bool = False,
) -> None:
    await conn.execute(UPDATE_STEP, route_id, name, status, int(add_attempt), error, started)


async def set_workflow_status(conn: asyncpg.Connection, route_id: str, status: str) -> None:
    await conn.execute(UPDATE_WORKFLOW, route_id, status)


async def finish_job(
    conn: asyncpg.Connection,
    route_id: str,
    story_id: str,
    status: str,
    *,
    audio_id: str | None,
    duration_s: float | None,
    error: str | None,
) -> None:
    await conn.execute(FINISH_JOB, route_id, story_id, status, audio_id, duration_s, error)


async def complete_job(
    conn: asyncpg.Connection,
    route_id: str,
    story_id: str,
    audio_id: str | None,
    duration_s: float | None,
    at: datetime,
) -> tuple[datetime | None, int]:
    """(the route's confirmation time when this is its first audio, else None; jobs still unfinished)."""
    row = await conn.fetchrow(COMPLETE_JOB, route_id, story_id, audio_id, duration_s, at)
    assert row is not None
    return row["confirmed_at"], int(row["unfinished"])


async def requeue_jobs(conn: asyncpg.Connection, route_id: str, attempt: int) -> list[asyncpg.Record]:
    rows = await conn.fetch(REQUEUE_JOBS, route_id, attempt)
    return sorted(rows, key=lambda r: r["position"])


async def add_restart(
    conn: asyncpg.Connection, route_id: str, name: str, attempt: int, who: str, reason: str | None
) -> None:
    await conn.execute(INSERT_RESTART, route_id, name, attempt, who, reason)


async def park(conn: asyncpg.Connection, route_id: str, kind: str, payload: dict[str, Any]) -> None:
    await conn.execute(PARK, route_id, kind, dumps(payload).decode())


async def unpark(conn: asyncpg.Connection, route_id: str, kind: str) -> list[str]:
    """Take the parked payloads (JSON text) of a route and kind, oldest first."""
    rows = await conn.fetch(UNPARK, route_id, kind)
    return [r["payload"] for r in sorted(rows, key=lambda r: r["id"])]
