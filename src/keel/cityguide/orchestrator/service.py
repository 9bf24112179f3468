"""The orchestrator's use cases: the workflow of a route from confirmation to delivery, and restarts.

Every handler takes a fetched batch, locks its routes (advisory locks) and writes the state changes
and the events they cause in one unit of work, through the outbox, with a few set-based statements for
the whole batch (not a few per event). Duplicates are no-ops by state (on top of the runner's inbox);
an event that arrives before what it refers to is parked and applied when that appears."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from keel.cityguide import topics
from keel.cityguide.orchestrator import messages, repository
from keel.cityguide.orchestrator.messages import RouteConfirmed, StoriesGenerated, TtsCompleted
from keel.cityguide.orchestrator.metrics import ROUTE_TO_FIRST_AUDIO
from keel.cityguide.orchestrator.schemas import Restart, RestartableStep, Step, TtsJob, Workflow
from keel.core.bus.message import Headers
from keel.core.db import Database, UnitOfWork
from keel.core.errors import Conflict, NotFound
from keel.core.events import Event
from keel.core.outbox import Outbox
from keel.core.telemetry import trace_headers

Clock = Callable[[], datetime]
Payload = dict[str, Any]  # an event's payload as it came, kept when the event is parked
# Route id → the headers of the event of this batch that concerns it: each route's events carry on
# that event's trace (a batch holds many routes, each in a trace of its own).
Causes = Mapping[str, Headers]
NO_CAUSES: Causes = {}


def causes(events: Sequence[Event], route_ids: Sequence[str]) -> Causes:
    found: dict[str, Headers] = {}
    for event, route_id in zip(events, route_ids, strict=True):
        found.setdefault(route_id, event.headers)
    return found


def utcnow() -> datetime:
    return datetime.now(UTC)


class OrchestratorService:
    def __init__(self, db: Database, outbox: Outbox, *, lang: str = "ru", clock: Clock = utcnow) -> None:
        self._db = db
        self._outbox = outbox
        self._lang = lang
        self._clock = clock

    # --- event handlers (run by the consumer runner on a fetched batch, inside its unit of work) ---

    async def on_route_confirmed(self, events: Sequence[Event], uow: UnitOfWork) -> None:
        confirmed = [(messages.route_confirmed(e.payload), self._confirmed_at(e)) for e in events]
        conn = await uow.raw()
        await repository.lock_routes(conn, (msg.route_id for msg, _ in confirmed))
        first: dict[str, tuple[RouteConfirmed, datetime]] = {}
        for msg, at in confirmed:
            first.setdefault(msg.route_id, (msg, at))  # a repeat in the batch is a duplicate
        caused = causes(events, [msg.route_id for msg, _ in confirmed])
        created = await repository.insert_workflows(
            conn, self._lang, [(r, msg.mode, msg.route, at) for r, (msg, at) in first.items()]
        )
        if not created:
            return  # duplicates: the workflows exist already
        commands = [
            (r, {"route_id": r, "lang": self._lang, "mode": msg.mode, "route": msg.route})
            for r, (msg, _) in first.items()
            if r in created
        ]
        await self._emit(uow, topics.STORY_GENERATE, commands, caused)
        parked = await repository.unpark(conn, created, topics.STORY_GENERATED)
        if parked:
            stories = [(messages.stories_generated(p), p) for p in parked]
            await self._apply_stories(uow, conn, stories, caused)

    async def on_stories_generated(self, events: Sequence[Event], uow: UnitOfWork) -> None:
        generated = [(messages.stories_generated(e.payload), e.payload) for e in events]
        conn = await uow.raw()
        await repository.lock_routes(conn, (msg.route_id for msg, _ in generated))
        caused = causes(events, [msg.route_id for msg, _ in generated])
        await self._apply_stories(uow, conn, generated, caused)

    async def on_tts_completed(self, events: Sequence[Event], uow: UnitOfWork) -> None:
        results = [messages.tts_result(e.payload, e.key) for e in events]
        conn = await uow.raw()
        await repository.lock_routes(conn, (msg.route_id for msg, _ in results))
        await self._apply_tts(uow, conn, results, causes(events, [msg.route_id for msg, _ in results]))

    # --- operator use cases ---

    async def get(self, route_id: str) -> Workflow:
        async with self._db.unit_of_work() as uow:
            return await self._view(await uow.raw(), route_id)

    async def restart(self, route_id: str, step: RestartableStep, who: str, reason: str | None) -> Workflow:
        """Step back to pending, attempts + 1, an audit row, and tts.requested again for the jobs not
        completed. Results of the earlier attempt that arrive later are ignored as stale."""
        async with self._db.unit_of_work() as uow:
            conn = await uow.raw()
            await repository.lock_routes(conn, [route_id])
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
            await self._request_tts(uow, jobs, attempt, NO_CAUSES)
            await uow.commit()
        return await self.get(route_id)

    # --- the workflow rules, each over many routes at once (the routes are locked) ---

    def _confirmed_at(self, event: Event) -> datetime:
        return event.created_at if event.has_event_id else self._clock()

    async def _apply_stories(
        self,
        uow: UnitOfWork,
        conn: asyncpg.Connection,
        generated: Sequence[tuple[StoriesGenerated, Payload]],
        caused: Causes,
    ) -> None:
        """Jobs from the first stories of each route (later ones are duplicates); stories for a route
        not confirmed yet are parked."""
        has_jobs = await repository.known_routes(conn, (msg.route_id for msg, _ in generated))
        parked: list[tuple[str, Payload]] = []
        applied: dict[str, StoriesGenerated] = {}
        for msg, payload in generated:
            route_id = msg.route_id
            if route_id not in has_jobs:
                parked.append((route_id, payload))
            elif has_jobs[route_id]:
                continue  # a duplicate story.generate.completed: the jobs were made from the first one
            elif not msg.stories:
                await repository.set_step(
                    conn, route_id, "story_generate", "failed", error="no stories for the route"
                )
                await repository.set_workflow_status(conn, route_id, "failed")
            else:
                applied[route_id] = msg
                has_jobs[route_id] = True
        await repository.park(conn, topics.STORY_GENERATED, parked)
        if not applied:
            return
        jobs = await repository.insert_jobs(
            conn, [(route_id, story) for route_id, msg in applied.items() for story in msg.stories]
        )
        await self._request_tts(uow, jobs, 1, caused)
        unparked = await repository.unpark(conn, applied, topics.TTS_COMPLETED)
        if unparked:
            await self._apply_tts(uow, conn, [(messages.tts_completed(p), p) for p in unparked], caused)

    async def _apply_tts(
        self,
        uow: UnitOfWork,
        conn: asyncpg.Connection,
        results: Sequence[tuple[TtsCompleted, Payload]],
        caused: Causes,
    ) -> None:
        """Completed results of many routes at once; a route with a failed result in the batch has its
        results applied one by one, in order (failures are rare and each changes the route's state)."""
        failing = {msg.route_id for msg, _ in results if msg.status == "failed"}
        await self._complete(uow, conn, [r for r in results if r[0].route_id not in failing], caused)
        for result in (r for r in results if r[0].route_id in failing):
            if result[0].status == "failed":
                await self._fail(conn, *result)
            else:
                await self._complete(uow, conn, [result], caused)

    async def _complete(
        self,
        uow: UnitOfWork,
        conn: asyncpg.Connection,
        results: Sequence[tuple[TtsCompleted, Payload]],
        caused: Causes,
    ) -> None:
        """Completed jobs, first audio, and delivery for the routes whose jobs are now all completed."""
        if not results:
            return
        jobs = {
            key: (job["status"], job["attempt"])
            for key, job in (
                await repository.jobs_by_key(conn, ((m.route_id, m.story_id) for m, _ in results))
            ).items()
        }
        parked: list[tuple[str, Payload]] = []
        done: dict[tuple[str, str], tuple[str | None, float | None]] = {}
        for msg, payload in results:
            key = (msg.route_id, msg.story_id)
            if key not in jobs:
                parked.append((msg.route_id, payload))  # before its story: applied when it comes
                continue
            status, attempt = jobs[key]
            if status == "completed" or (msg.attempt is not None and msg.attempt < attempt):
                continue  # a duplicate, or a late result of an attempt that was restarted since
            done[key] = (msg.audio_id, msg.duration_s)
            jobs[key] = ("completed", attempt)
        await repository.park(conn, topics.TTS_COMPLETED, parked)
        if not done:
            return
        now = self._clock()
        routes = await repository.complete_jobs(conn, [(*key, *value) for key, value in done.items()], now)
        for route in routes:
            if route["confirmed_at"] is not None:
                self._first_audio(uow, max((now - route["confirmed_at"]).total_seconds(), 0.0))
        finished = sorted(route["route_id"] for route in routes if route["unfinished"] == 0)
        if finished:
            delivered = await repository.deliver(conn, finished)
            prefetch = [(r, {"route_id": r, "next_audio": audio}) for r, audio in delivered]
            await self._emit(uow, topics.DELIVERY_PREFETCH, prefetch, caused)

    async def _fail(self, conn: asyncpg.Connection, msg: TtsCompleted, payload: Payload) -> None:
        route_id = msg.route_id
        job = await repository.job(conn, route_id, msg.story_id)
        if job is None:
            await repository.park(conn, topics.TTS_COMPLETED, [(route_id, payload)])
            return
        if job["status"] in ("completed", "failed"):
            return  # a failure for a job that has a result already
        if msg.attempt is not None and msg.attempt < job["attempt"]:
            return  # a late result of an attempt that was restarted since
        reason = msg.error or "tts failed"
        await repository.finish_job(
            conn, route_id, msg.story_id, "failed", audio_id=None, duration_s=None, error=reason
        )
        await repository.set_step(
            conn, route_id, "tts_batch", "failed", error=f"story {msg.story_id}: {reason}"
        )
        await repository.set_workflow_status(conn, route_id, "failed")

    def _first_audio(self, uow: UnitOfWork, elapsed: float) -> None:
        async def observe() -> None:
            ROUTE_TO_FIRST_AUDIO.observe(elapsed)

        uow.after_commit(observe)

    async def _request_tts(
        self, uow: UnitOfWork, jobs: Sequence[asyncpg.Record], attempt: int, caused: Causes
    ) -> None:
        # Every route's first story before any route's second: the TTS workers take requests in this
        # order, and a route's first audio is what its listener waits for.
        requests = [
            (
                job["story_id"],
                {
                    "route_id": job["route_id"],
                    "story_id": job["story_id"],
                    "position": job["position"],
                    "title": job["title"],
                    "text": job["text"],
                    "lang": self._lang,
                    "attempt": attempt,
                },
            )
            for job in sorted(jobs, key=lambda j: (j["position"], j["route_id"]))
        ]
        await self._emit(uow, topics.TTS_REQUESTED, requests, caused)

    async def _emit(
        self, uow: UnitOfWork, topic: str, events: Sequence[tuple[str, dict[str, Any]]], caused: Causes
    ) -> None:
        batch = [
            Event(topic, payload, key=key, headers=trace_headers(caused.get(payload["route_id"], ())))
            for key, payload in events
        ]
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
