"""The orchestrator's use cases: the workflow of a route from confirmation to delivery, and restarts.

Every handler locks its route (advisory lock) and writes the state change and the events it causes in
one unit of work, through the outbox. Duplicates are no-ops by state (on top of the runner's inbox);
an event that arrives before what it refers to is parked and applied when that appears."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from keel.cityguide import topics
from keel.cityguide.orchestrator import messages, repository
from keel.cityguide.orchestrator.messages import StoriesGenerated, TtsCompleted
from keel.cityguide.orchestrator.metrics import ROUTE_TO_FIRST_AUDIO
from keel.cityguide.orchestrator.schemas import Restart, RestartableStep, Step, TtsJob, Workflow
from keel.core.db import Database, UnitOfWork
from keel.core.errors import Conflict, NotFound
from keel.core.events import Event
from keel.core.outbox import Outbox

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class OrchestratorService:
    def __init__(self, db: Database, outbox: Outbox, *, lang: str = "ru", clock: Clock = utcnow) -> None:
        self._db = db
        self._outbox = outbox
        self._lang = lang
        self._clock = clock

    # --- event handlers (run by the consumer runner inside its unit of work) ---

    async def on_route_confirmed(self, event: Event, uow: UnitOfWork) -> None:
        msg = messages.route_confirmed(event.payload)
        conn = await uow.raw()
        await repository.lock_route(conn, msg.route_id)
        confirmed_at = event.created_at if event.has_event_id else self._clock()
        if not await repository.insert_workflow(
            conn, msg.route_id, msg.mode, self._lang, msg.route, confirmed_at
        ):
            return  # a duplicate route.confirmed: the workflow exists already
        command = {"route_id": msg.route_id, "lang": self._lang, "mode": msg.mode, "route": msg.route}
        await self._emit(uow, topics.STORY_GENERATE, [(msg.route_id, command)])
        for raw in await repository.unpark(conn, msg.route_id, topics.STORY_GENERATED):
            await self._apply_stories(uow, conn, messages.stories_generated(orjson.loads(raw)))

    async def on_stories_generated(self, event: Event, uow: UnitOfWork) -> None:
        msg = messages.stories_generated(event.payload)
        conn = await uow.raw()
        await repository.lock_route(conn, msg.route_id)
        if await repository.workflow(conn, msg.route_id) is None:
            await repository.park(conn, msg.route_id, topics.STORY_GENERATED, event.payload)
            return
        await self._apply_stories(uow, conn, msg)

    async def on_tts_completed(self, event: Event, uow: UnitOfWork) -> None:
        msg = messages.tts_completed(event.payload)
        conn = await uow.raw()
        await repository.lock_route(conn, msg.route_id)
        job = await repository.job(conn, msg.route_id, msg.story_id)
        if job is None:
            await repository.park(conn, msg.route_id, topics.TTS_COMPLETED, event.payload)
            return
        await self._apply_tts(uow, conn, msg, job)

    # --- operator use cases ---

    async def get(self, route_id: str) -> Workflow:
        async with self._db.unit_of_work() as uow:
            return await self._view(await uow.raw(), route_id)

    async def restart(self, route_id: str, step: RestartableStep, who: str, reason: str | None) -> Workflow:
        """Step back to pending, attempts + 1, an audit row, and tts.requested again for the jobs not
        completed. Results of the earlier attempt that arrive later are ignored as stale."""
        async with self._db.unit_of_work() as uow:
            conn = await uow.raw()
            await repository.lock_route(conn, route_id)
            if await repository.workflow(conn, route_id) is None:
                raise NotFound(f"no workflow for route {route_id!r}")
            current = await repository.step(conn, route_id, step.value)
            if current is None or not await repository.has_jobs(conn, route_id):
                raise Conflict(f"{step.value} has not started yet: the route's stories are not generated")
            if current["status"] == "completed":
                raise Conflict(f"{step.value} is already completed; nothing to restart")
            attempt = current["attempts"] + 1
            await repository.set_step(conn, route_id, step.value, "pending", add_attempt=True, started=True)
            await repository.set_workflow_status(conn, route_id, "running")
            await repository.add_restart(conn, route_id, step.value, attempt, who, reason)
            jobs = await repository.requeue_jobs(conn, route_id, attempt)
            await self._request_tts(uow, route_id, jobs, attempt)
            await uow.commit()
        return await self.get(route_id)

    # --- the workflow rules ---

    async def _apply_stories(self, uow: UnitOfWork, conn: asyncpg.Connection, msg: StoriesGenerated) -> None:
        if await repository.has_jobs(conn, msg.route_id):
            return  # a duplicate story.generate.completed: the jobs were made from the first one
        route_id = msg.route_id
        if not msg.stories:
            await repository.set_step(
                conn, route_id, "story_generate", "failed", error="no stories for the route"
            )
            await repository.set_workflow_status(conn, route_id, "failed")
            return
        stories = [
            {"story_id": s.story_id, "position": s.position, "title": s.title, "text": s.text}
            for s in msg.stories
        ]
        jobs = await repository.insert_jobs(conn, route_id, stories)
        await repository.set_step(conn, route_id, "story_generate", "completed")
        await repository.set_step(conn, route_id, "tts_batch", "running", add_attempt=True, started=True)
        await self._request_tts(uow, route_id, jobs, 1)
        for raw in await repository.unpark(conn, route_id, topics.TTS_COMPLETED):
            await self._apply_tts(uow, conn, messages.tts_completed(orjson.loads(raw)))

    async def _apply_tts(
        self, uow: UnitOfWork, conn: asyncpg.Connection, msg: TtsCompleted, job: asyncpg.Record | None = None
    ) -> None:
        route_id = msg.route_id
        if job is None:
            job = await repository.job(conn, route_id, msg.story_id)
        if job is None:
            await repository.park(conn, route_id, topics.TTS_COMPLETED, _tts_payload(msg))
            return
        if job["status"] == "completed" or (job["status"] == "failed" and msg.status == "failed"):
            return  # a duplicate, or a result for a job that has one already
        if msg.attempt is not None and msg.attempt < job["attempt"]:
            return  # a late result of an attempt that was restarted since
        if msg.status == "failed":
            reason = msg.error or "tts failed"
            await repository.finish_job(
                conn, route_id, msg.story_id, "failed", audio_id=None, duration_s=None, error=reason
            )
            await repository.set_step(
                conn, route_id, "tts_batch", "failed", error=f"story {msg.story_id}: {reason}"
            )
            await repository.set_workflow_status(conn, route_id, "failed")
            return
        # The most frequent event of a route: one statement (job, first audio, a pending batch back to
        # running, what is left) instead of five round trips.
        now = self._clock()
        confirmed, unfinished = await repository.complete_job(
            conn, route_id, msg.story_id, msg.audio_id, msg.duration_s, now
        )
        if confirmed is not None:
            self._first_audio(uow, max((now - confirmed).total_seconds(), 0.0))
        if unfinished == 0:
            await self._deliver(uow, conn, route_id, await repository.jobs(conn, route_id))

    async def _deliver(
        self, uow: UnitOfWork, conn: asyncpg.Connection, route_id: str, jobs: Sequence[asyncpg.Record]
    ) -> None:
        await repository.set_step(conn, route_id, "tts_batch", "completed")
        await repository.set_step(conn, route_id, "delivery", "running", add_attempt=True, started=True)
        payload = {"route_id": route_id, "next_audio": [j["audio_id"] for j in jobs]}
        await self._emit(uow, topics.DELIVERY_PREFETCH, [(route_id, payload)])
        await repository.set_step(conn, route_id, "delivery", "completed")
        await repository.set_workflow_status(conn, route_id, "completed")

    def _first_audio(self, uow: UnitOfWork, elapsed: float) -> None:
        async def observe() -> None:
            ROUTE_TO_FIRST_AUDIO.observe(elapsed)

        uow.after_commit(observe)

    async def _request_tts(
        self, uow: UnitOfWork, route_id: str, jobs: Sequence[asyncpg.Record], attempt: int
    ) -> None:
        requests = [
            (
                job["story_id"],
                {
                    "route_id": route_id,
                    "story_id": job["story_id"],
                    "position": job["position"],
                    "title": job["title"],
                    "text": job["text"],
                    "lang": self._lang,
                    "attempt": attempt,
                },
            )
            for job in jobs
        ]
        await self._emit(uow, topics.TTS_REQUESTED, requests)

    async def _emit(self, uow: UnitOfWork, topic: str, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        batch = [Event(topic, payload, key=key) for key, payload in events]
        await self._outbox.add_many(uow, batch, topic, wire="bare")

    async def _view(self, conn: asyncpg.Connection, route_id: str) -> Workflow:
        row = await repository.workflow(conn, route_id)
        if row is None:
            raise NotFound(f"no workflow for route {route_id!r}")
        return Workflow(
            route_id=row["route_id"],
            mode=row["mode"],
            lang=row["lang"],
            status=row["status"],
            confirmed_at=row["confirmed_at"],
            first_audio_at=row["first_audio_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            completed_at=row["completed_at"],
            steps=[
                Step(
                    name=s["step"],
                    status=s["status"],
                    attempts=s["attempts"],
                    started_at=s["started_at"],
                    finished_at=s["finished_at"],
                    error=s["error"],
                )
                for s in await repository.steps(conn, route_id)
            ],
            jobs=[
                TtsJob(**{k: j[k] for k in TtsJob.model_fields})
                for j in await repository.jobs(conn, route_id)
            ],
            restarts=[
                Restart(**{k: r[k] for k in Restart.model_fields})
                for r in await repository.restarts(conn, route_id)
            ],
        )


def _tts_payload(msg: TtsCompleted) -> dict[str, Any]:
    return {
        "route_id": msg.route_id,
        "story_id": msg.story_id,
        "status": msg.status,
        "audio_id": msg.audio_id,
        "duration_s": msg.duration_s,
        "error": msg.error,
        "attempt": msg.attempt,
    }
