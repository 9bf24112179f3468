"""Helpers for cityguide tests: run a handler in its own unit of work, read what went to the outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import orjson

from keel.cityguide import topics
from keel.core.bus import OutgoingMessage
from keel.core.db import Database, UnitOfWork
from keel.core.events import Event
from tests.support.eventually import eventually
from tests.support.topic_log import published_events

Handle = Callable[[Sequence[Event], UnitOfWork], Awaitable[None]]


async def deliver(db: Database, handle: Handle, topic: str, payload: dict[str, Any], **event: Any) -> None:
    """Hand one event to a handler the way the consumer runner does: one unit of work, committed."""
    await deliver_batch(db, handle, [Event(topic, payload, **event)])


async def deliver_batch(db: Database, handle: Handle, events: Sequence[Event]) -> None:
    """Hand a fetched batch to a handler: one unit of work for all of it, committed."""
    async with db.unit_of_work() as uow:
        await handle(events, uow)
        await uow.commit()


async def emitted(db: Database, topic: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(key, payload) of every event written to the outbox for `topic`, in write order."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT key, payload::text AS p, wire FROM outbox_events WHERE topic = $1 ORDER BY id", topic
        )
    assert all(r["wire"] == "bare" for r in rows)
    return [(r["key"], orjson.loads(r["p"])) for r in rows]


def stories(route_id: str, count: int = 3) -> list[dict[str, Any]]:
    return [
        {"story_id": f"{route_id}-{n}", "title": f"T{n}", "text": f"История номер {n}."} for n in range(count)
    ]


def tts_ok(route_id: str, story_id: str, attempt: int = 1) -> dict[str, Any]:
    return {
        "route_id": route_id,
        "story_id": story_id,
        "audio_id": f"a-{story_id}-{attempt}",
        "status": "completed",
        "duration_s": 1.5,
        "attempt": attempt,
    }


def tts_failed(route_id: str, story_id: str, attempt: int = 1) -> dict[str, Any]:
    return {
        "route_id": route_id,
        "story_id": story_id,
        "status": "failed",
        "error": "synth broke",
        "attempt": attempt,
    }


async def publish_ready(app: Any, route_id: str, positions: Sequence[int], *, copies: int = 1) -> None:
    """tts.completed for audio `<route_id>-a<n>` at each position, `copies` times each, onto the app's bus."""
    producer = app.state.infra.bus.producer()
    await producer.start()
    for n in positions:
        audio_id = f"{route_id}-a{n}"
        body = {
            "route_id": route_id,
            "story_id": f"s{n}",
            "audio_id": audio_id,
            "status": "completed",
            "duration_s": 2.0,
            "position": n,
        }
        for _ in range(copies):
            await producer.send(
                OutgoingMessage(topics.TTS_COMPLETED, orjson.dumps(body), key=audio_id.encode())
            )
    await producer.stop()


# What the orchestrator emits, through its outbox.
EMITTED = (topics.STORY_GENERATE, topics.TTS_REQUESTED, topics.DELIVERY_PREFETCH)
_WAITING = "SELECT count(*) FROM outbox_events WHERE payload->>'route_id' LIKE $1 || '%'"


async def published_for(
    dsn: str, brokers: list[str], prefix: str, *, timeout_s: float = 60.0
) -> list[tuple[str, Event]]:
    """(topic, event) for each event the orchestrator published for the routes whose id starts with
    `prefix`, once each, read from the topics after the outbox holds none of theirs (the relay
    deletes a row once the broker has it)."""

    async def waiting() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(_WAITING, prefix))
        finally:
            await conn.close()

    await eventually(
        waiting, until=lambda n: n == 0, timeout_s=timeout_s, what=f"the outbox rows of {prefix}* published"
    )
    return await published_events(
        brokers, EMITTED, lambda e: str(e.payload.get("route_id", "")).startswith(prefix)
    )
