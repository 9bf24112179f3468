"""The orchestrator's SQL: every statement it runs, on the unit of work's driver connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from keel.cityguide.orchestrator.messages import Story
from keel.core.events import dumps

STEPS = ("story_generate", "tts_batch", "delivery")

# Serialises every handler and the restart for one route (tts.completed for one route arrives on
# several partitions at once), including handlers that only park an event for a route not known yet.
# A batch takes all its routes' locks in one statement, in the order given (sorted by the caller): two
# batches never wait on each other in a cycle.
LOCK_ROUTES = """
SELECT count(pg_advisory_xact_lock(hashtextextended('cityguide:' || r, 0)))
FROM unnest($1::text[]) AS r
"""

# The workflows and their steps in one round trip; only the routes that had none are returned.
INSERT_WORKFLOWS = """
WITH w AS (
    INSERT INTO cityguide_workflows (route_id, mode, lang, status, route, confirmed_at)
    SELECT r.route_id, r.mode, $4, 'running', r.route::jsonb, r.confirmed_at
    FROM unnest($1::text[], $2::text[], $3::text[], $5::timestamptz[]) AS r(route_id, mode, route, confirmed_at)
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

# Of the given routes, those with a workflow, and whether their stories have made jobs yet.
SELECT_KNOWN = """
SELECT w.route_id, EXISTS (SELECT 1 FROM cityguide_tts_jobs j WHERE j.route_id = w.route_id) AS has_jobs
FROM cityguide_workflows w
WHERE w.route_id = ANY($1::text[])
"""

SELECT_WORKFLOW = "SELECT * FROM cityguide_workflows WHERE route_id = $1"
SELECT_STEPS = "SELECT * FROM cityguide_workflow_steps WHERE route_id = $1 ORDER BY position"
SELECT_STEP = "SELECT * FROM cityguide_workflow_steps WHERE route_id = $1 AND step = $2"
SELECT_JOBS = "SELECT * FROM cityguide_tts_jobs WHERE route_id = $1 ORDER BY position"
SELECT_JOB = "SELECT * FROM cityguide_tts_jobs WHERE route_id = $1 AND story_id = $2"
SELECT_RESTARTS = "SELECT * FROM cityguide_workflow_restarts WHERE route_id = $1 ORDER BY id"
COUNT_JOBS = "SELECT count(*) FROM cityguide_tts_jobs WHERE route_id = $1"

# The jobs of many routes' stories, and their steps moved on (story_generate completed, tts_batch
# running with its first attempt), in one round trip.
INSERT_JOBS = """
WITH jobs AS (
    INSERT INTO cityguide_tts_jobs (route_id, story_id, position, title, text, status, attempt)
    SELECT j.route_id, j.story_id, j.position, j.title, j.text, 'pending', 1
    FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[])
        AS j(route_id, story_id, position, title, text)
    RETURNING *
), steps AS (
    UPDATE cityguide_workflow_steps s
    SET status = CASE s.step WHEN 'story_generate' THEN 'completed' ELSE 'running' END,
        attempts = s.attempts + CASE s.step WHEN 'tts_batch' THEN 1 ELSE 0 END,
        error = NULL,
        started_at = CASE s.step WHEN 'tts_batch' THEN now() ELSE s.started_at END,
        finished_at = CASE s.step WHEN 'story_generate' THEN now() END
    WHERE s.route_id IN (SELECT DISTINCT route_id FROM jobs) AND s.step IN ('story_generate', 'tts_batch')
)
SELECT * FROM jobs
"""

SELECT_JOBS_BY_KEY = """
SELECT j.route_id, j.story_id, j.status, j.attempt
FROM cityguide_tts_jobs j
JOIN unnest($1::text[], $2::text[]) AS k(route_id, story_id)
    ON j.route_id = k.route_id AND j.story_id = k.story_id
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

# Completed jobs of many routes in one round trip: the jobs, each route's first audio (when it is the
# first), the batch step back to running where a restart left it pending, and per route how many
# other jobs are not completed yet. Data-modifying CTEs all run, whether or not the outer query reads
# them; the count reads the statement's snapshot, which is why it leaves these jobs out rather than
# relying on their update. The count is a join, not a subquery per route: per route, the subquery
# scanned the whole batch for each of its jobs (quadratic in the batch; bench/results/changes.md).
COMPLETE_JOBS = """
WITH k AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])
        AS k(route_id, story_id, audio_id, duration_s)
), done AS (
    UPDATE cityguide_tts_jobs j
    SET status = 'completed', audio_id = k.audio_id, duration_s = k.duration_s, error = NULL,
        updated_at = now()
    FROM k
    WHERE j.route_id = k.route_id AND j.story_id = k.story_id
), first AS (
    UPDATE cityguide_workflows w SET first_audio_at = $5, updated_at = now()
    WHERE w.route_id IN (SELECT route_id FROM k) AND w.first_audio_at IS NULL
    RETURNING w.route_id, w.confirmed_at
), resumed AS (
    UPDATE cityguide_workflow_steps s
    SET status = 'running', error = NULL, finished_at = NULL
    WHERE s.route_id IN (SELECT route_id FROM k) AND s.step = 'tts_batch' AND s.status = 'pending'
)
SELECT r.route_id, f.confirmed_at, count(j.story_id) AS unfinished
FROM (SELECT DISTINCT route_id FROM k) AS r
LEFT JOIN first AS f ON f.route_id = r.route_id
LEFT JOIN cityguide_tts_jobs AS j ON j.route_id = r.route_id AND j.status <> 'completed'
    AND NOT EXISTS (SELECT 1 FROM k WHERE k.route_id = j.route_id AND k.story_id = j.story_id)
GROUP BY r.route_id, f.confirmed_at
"""

# Routes whose jobs are all completed: tts_batch completed, delivery run (attempt + 1) and completed,
# the workflow completed; returns each route's audio in story order, for delivery.prefetch.
DELIVER = """
WITH steps AS (
    UPDATE cityguide_workflow_steps s
    SET status = 'completed',
        attempts = s.attempts + CASE s.step WHEN 'delivery' THEN 1 ELSE 0 END,
        error = NULL,
        started_at = CASE s.step WHEN 'delivery' THEN now() ELSE s.started_at END,
        finished_at = now()
    WHERE s.route_id = ANY($1::text[]) AND s.step IN ('tts_batch', 'delivery')
), done AS (
    UPDATE cityguide_workflows
    SET status = 'completed', updated_at = now(), completed_at = now()
    WHERE route_id = ANY($1::text[])
)
SELECT route_id, array_agg(audio_id ORDER BY position) AS audio
FROM cityguide_tts_jobs
WHERE route_id = ANY($1::text[])
GROUP BY route_id
ORDER BY route_id
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

PARK = """
INSERT INTO cityguide_parked_events (route_id, kind, payload)
SELECT p.route_id, $2, p.payload::jsonb
FROM unnest($1::text[], $3::text[]) WITH ORDINALITY AS p(route_id, payload, n)
ORDER BY p.n
"""
UNPARK = """
DELETE FROM cityguide_parked_events WHERE route_id = ANY($1::text[]) AND kind = $2
RETURNING id, payload::text AS payload
"""


async def lock_routes(conn: asyncpg.Connection, route_ids: Iterable[str]) -> None:
    await conn.fetchval(LOCK_ROUTES, sorted(set(route_ids)))


async def insert_workflows(
    conn: asyncpg.Connection, lang: str, workflows: Sequence[tuple[str, str, dict[str, Any], datetime]]
) -> set[str]:
    """Workflows (route_id, mode, route, confirmed_at) with their steps; returns the routes that were new."""
    rows = await conn.fetch(
        INSERT_WORKFLOWS,
        [w[0] for w in workflows],
        [w[1] for w in workflows],
        [dumps(w[2]).decode() for w in workflows],
        lang,
        [w[3] for w in workflows],
        list(STEPS),
    )
    return {r["route_id"] for r in rows}


async def known_routes(conn: asyncpg.Connection, route_ids: Iterable[str]) -> dict[str, bool]:
    """route_id → whether it has jobs, for the given routes that have a workflow."""
    rows = await conn.fetch(SELECT_KNOWN, list(set(route_ids)))
    return {r["route_id"]: r["has_jobs"] for r in rows}


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


async def insert_jobs(conn: asyncpg.Connection, stories: Sequence[tuple[str, Story]]) -> list[asyncpg.Record]:
    """Jobs for (route_id, story), their routes' steps moved on to tts_batch; returns the new jobs."""
    return list(
        await conn.fetch(
            INSERT_JOBS,
            [route_id for route_id, _ in stories],
            [s.story_id for _, s in stories],
            [s.position for _, s in stories],
            [s.title for _, s in stories],
            [s.text for _, s in stories],
        )
    )


async def jobs_by_key(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], asyncpg.Record]:
    """(route_id, story_id) → the job's status and attempt, for the keys that have a job."""
    pairs = list(set(keys))
    rows = await conn.fetch(SELECT_JOBS_BY_KEY, [p[0] for p in pairs], [p[1] for p in pairs])
    return {(r["route_id"], r["story_id"]): r for r in rows}


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


async def complete_jobs(
    conn: asyncpg.Connection,
    done: Sequence[tuple[str, str, str | None, float | None]],
    at: datetime,
) -> list[asyncpg.Record]:
    """Jobs (route_id, story_id, audio_id, duration_s) completed; per route: `route_id`,
    `confirmed_at` (set when this is its first audio) and `unfinished` (jobs not completed yet)."""
    return list(
        await conn.fetch(
            COMPLETE_JOBS,
            [d[0] for d in done],
            [d[1] for d in done],
            [d[2] for d in done],
            [d[3] for d in done],
            at,
        )
    )


async def deliver(conn: asyncpg.Connection, route_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The routes completed; (route_id, its audio ids in story order) for each."""
    rows = await conn.fetch(DELIVER, list(route_ids))
    return [(r["route_id"], list(r["audio"])) for r in rows]


async def requeue_jobs(conn: asyncpg.Connection, route_id: str, attempt: int) -> list[asyncpg.Record]:
    rows = await conn.fetch(REQUEUE_JOBS, route_id, attempt)
    return sorted(rows, key=lambda r: r["position"])


async def add_restart(
    conn: asyncpg.Connection, route_id: str, name: str, attempt: int, who: str, reason: str | None
) -> None:
    await conn.execute(INSERT_RESTART, route_id, name, attempt, who, reason)


async def park(conn: asyncpg.Connection, kind: str, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Keep (route_id, payload) events of one kind until what they refer to appears, in this order."""
    if events:
        await conn.execute(PARK, [e[0] for e in events], kind, [dumps(e[1]).decode() for e in events])


async def unpark(conn: asyncpg.Connection, route_ids: Iterable[str], kind: str) -> list[dict[str, Any]]:
    """Take the parked payloads of these routes and kind, oldest first."""
    rows = await conn.fetch(UNPARK, list(set(route_ids)), kind)
    return [orjson.loads(r["payload"]) for r in sorted(rows, key=lambda r: r["id"])]
