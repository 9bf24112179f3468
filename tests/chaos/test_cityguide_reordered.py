"""The cityguide orchestrator on the real broker and PostgreSQL, fed its three input topics directly:
events reordered (completions before their start, stories before their route, a route's results
shuffled), and duplicated (the same event id again, and again without headers, before and after
the route completed), must leave the orchestrator's tables exactly as a clean in-order run does.

Both runs use the same routes under different id prefixes; a snapshot of every row belonging to a
run, with the prefix taken out and timestamps reduced to set/unset, is compared row by row."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from keel.cityguide import topics
from keel.cityguide.orchestrator.spec import GROUP
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.core import infra as infra_module
from keel.core.bus import Bus, OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.core.events import Event, encode
from keel.core.settings import Settings
from tests.chaos.conftest import chaos_scale
from tests.integration.cityguide.support import published_for
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers
from tests.support.serving import serving_app

ROUTES = 10  # per run, times the scale
CONSUMED = (topics.ROUTE_CONFIRMED, topics.STORY_GENERATED, topics.TTS_COMPLETED)
TIMEOUT_S = 60
# Each table's rows of one run: the query takes the run's id prefix as $1.
TABLES = {
    "cityguide_workflows": "SELECT * FROM cityguide_workflows WHERE route_id LIKE $1 || '%'",
    "cityguide_workflow_steps": "SELECT * FROM cityguide_workflow_steps WHERE route_id LIKE $1 || '%'",
    "cityguide_tts_jobs": "SELECT * FROM cityguide_tts_jobs WHERE route_id LIKE $1 || '%'",
    "cityguide_parked_events": "SELECT route_id, kind, payload FROM cityguide_parked_events"
    " WHERE route_id LIKE $1 || '%'",
    "cityguide_workflow_restarts": "SELECT route_id, step, attempt, requested_by, reason"
    " FROM cityguide_workflow_restarts WHERE route_id LIKE $1 || '%'",
}


@dataclass(frozen=True)
class Message:
    """One input event of a run: its topic, key and payload, with the event id it carries."""

    topic: str
    key: str
    payload: dict[str, Any]
    event_id: str

    def headered(self) -> OutgoingMessage:
        return encode(
            Event(self.topic, self.payload, key=self.key, event_id=self.event_id), self.topic, "bare"
        )

    def headerless(self) -> OutgoingMessage:
        """As an outside producer sends it: no event id, deduplicated by its natural key."""
        return OutgoingMessage(self.topic, orjson.dumps(self.payload), key=self.key.encode())


def route_events(prefix: str, n: int) -> list[list[Message]]:
    """Route `n` of a run: [route.confirmed], [its stories], [one tts.completed per story]."""
    route_id = f"{prefix}-r{n}"
    stories = [
        {"story_id": f"{route_id}-s{j}", "title": f"Точка {j}", "text": f"История {n}.{j}."}
        for j in range(2 + n % 4)
    ]

    def message(topic: str, key: str, payload: dict[str, Any]) -> Message:
        return Message(topic, key, payload, uuid.uuid4().hex)

    return [
        [message(topics.ROUTE_CONFIRMED, route_id, {"route_id": route_id, "mode": "walk", "city": "Казань"})],
        [message(topics.STORY_GENERATED, route_id, {"route_id": route_id, "lang": "ru", "stories": stories})],
        [
            message(
                topics.TTS_COMPLETED,
                f"a-{s['story_id']}",
                {
                    "route_id": route_id,
                    "story_id": s["story_id"],
                    "audio_id": f"a-{s['story_id']}",
                    "status": "completed",
                    "duration_s": 1.5 + j,
                    "attempt": 1,
                },
            )
            for j, s in enumerate(stories)
        ],
    ]


def _consumed(topic: str) -> float:
    return sum(
        REGISTRY.get_sample_value(
            "events_consumed_total", {"group": f"{GROUP}.{topic}", "topic": topic, "outcome": outcome}
        )
        or 0.0
        for outcome in ("ok", "duplicate", "dlq")
    )


def _dead_lettered() -> float:
    return sum(
        REGISTRY.get_sample_value(
            "events_consumed_total", {"group": f"{GROUP}.{topic}", "topic": topic, "outcome": "dlq"}
        )
        or 0.0
        for topic in CONSUMED
    )


class Orchestrator:
    """The running orchestrator and what a test needs around it: send, wait until handled, read."""

    def __init__(self, bus: KafkaBus, dsn: str) -> None:
        self.bus, self.dsn = bus, dsn

    async def deliver(self, messages: Iterable[OutgoingMessage]) -> int:
        """Send `messages` and wait until the orchestrator has handled every one; returns how many."""
        batch = list(messages)
        expected = {t: _consumed(t) + sum(m.topic == t for m in batch) for t in CONSUMED}
        producer = self.bus.producer()
        await producer.start()
        try:
            await producer.send_many(batch)
        finally:
            await producer.stop()
        await eventually(
            lambda: {t: _consumed(t) for t in CONSUMED},
            until=lambda now: all(now[t] >= expected[t] for t in CONSUMED),
            timeout_s=TIMEOUT_S,
            what="every message handled",
        )
        return len(batch)

    async def completed(self, prefix: str, routes: int) -> None:
        query = (
            "SELECT count(*) FROM cityguide_workflows WHERE route_id LIKE $1 || '%' AND status = 'completed'"
        )
        await eventually(
            lambda: self._fetchval(query, prefix),
            until=lambda n: n == routes,
            timeout_s=TIMEOUT_S,
            what=f"{routes} workflows completed",
        )

    async def _fetchval(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def snapshot(self, prefix: str) -> dict[str, list[str]]:
        """Every row of the run, prefix replaced, timestamps reduced to set/unset, sorted per table;
        and under "emitted" every event the run published, once each."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = {
                table: sorted(_normalised(dict(row), prefix) for row in await conn.fetch(query, prefix))
                for table, query in TABLES.items()
            }
        finally:
            await conn.close()
        events = await published_for(self.dsn, self.bus.brokers, prefix, timeout_s=TIMEOUT_S)
        emitted = [{"topic": t, "key": e.key, "payload": e.payload} for t, e in events]
        return {**rows, "emitted": sorted(_normalised(e, prefix) for e in emitted)}


def _normalised(row: dict[str, Any], prefix: str) -> str:
    # Timestamps are the clock's, ids the sequence's: only whether a timestamp is set is state.
    kept = {k: ("<set>" if isinstance(v, datetime) else v) for k, v in row.items() if k != "id"}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS, default=str).decode().replace(prefix, "<run>")


@pytest_asyncio.fixture(scope="module")
async def orchestrator(
    pg_dsn: str, kafka_brokers: list[str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Orchestrator]:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path_factory.mktemp("cityguide-chaos") / "keel",
            "postgres_dsn": pg_dsn,
            "kafka_brokers": kafka_brokers,
            "kafka_idempotence": idempotent_producers(),
        }
    )

    def quick_join_bus(s: Settings) -> Bus:
        # The test broker rebalances in a fraction of the production session timeout.
        return KafkaBus(
            s.kafka_brokers,
            idempotence=idempotent_producers(),
            session_timeout_ms=3000,
            heartbeat_interval_ms=300,
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(infra_module, "build_bus", quick_join_bus)
        async with serving_app([ORCHESTRATOR], settings):
            bus = KafkaBus(kafka_brokers, idempotence=idempotent_producers())
            try:
                yield Orchestrator(bus, pg_dsn)
            finally:
                await bus.close()


@pytest_asyncio.fixture(scope="module")
async def clean(orchestrator: Orchestrator) -> dict[str, list[str]]:
    """The reference: every event once, in order, each stage handled before the next is sent."""
    prefix = f"clean{uuid.uuid4().hex[:8]}"
    runs = [route_events(prefix, n) for n in range(ROUTES * chaos_scale())]
    for stage in range(3):
        await orchestrator.deliver(m.headered() for run in runs for m in run[stage])
    await orchestrator.completed(prefix, len(runs))
    snapshot = await orchestrator.snapshot(prefix)
    stories = sum(len(run[2]) for run in runs)
    # The reference holds the whole state: 3 steps per route, a job per story, and what was emitted
    # (story.generate and delivery.prefetch per route, tts.requested per story); nothing parked.
    assert [len(rows) for rows in snapshot.values()] == [
        len(runs),
        3 * len(runs),
        stories,
        0,
        0,
        2 * len(runs) + stories,
    ]
    return snapshot


def _diff(got: dict[str, list[str]], want: dict[str, list[str]]) -> int:
    """Rows present on one side only, over all tables (a changed row counts twice)."""
    return sum(len(set(got[t]) ^ set(want[t])) + abs(len(got[t]) - len(want[t])) for t in want)


async def test_reordered_events_end_in_the_state_of_the_clean_run(
    orchestrator: Orchestrator, clean: dict[str, list[str]]
) -> None:
    rng = random.Random(uuid.uuid4().int)
    # Counted from here: earlier tests in the same session may have dead-lettered poison on purpose.
    dead_before = _dead_lettered()
    prefix = f"reord{uuid.uuid4().hex[:8]}"
    runs = [route_events(prefix, n) for n in range(ROUTES * chaos_scale())]
    sent = reordered = 0
    # Backwards, each stage handled before the next: results, then stories, then the routes.
    for stage in (2, 1, 0):
        stage_messages = [m for run in runs for m in run[stage]]
        rng.shuffle(stage_messages)
        sent += await orchestrator.deliver(m.headered() for m in stage_messages)
        reordered += len(stage_messages) if stage else 0
    await orchestrator.completed(prefix, len(runs))

    got = await orchestrator.snapshot(prefix)
    diff = _diff(got, clean)
    print(
        f"\ncityguide reordered: {len(runs)} routes, events {sent}, duplicates 0, "
        f"reordered {reordered} (before what they refer to), diff {diff} rows over {len(TABLES)} tables"
    )
    assert _dead_lettered() == dead_before
    assert got == clean


async def test_duplicated_and_reordered_events_end_in_the_state_of_the_clean_run(
    orchestrator: Orchestrator, clean: dict[str, list[str]]
) -> None:
    rng = random.Random(uuid.uuid4().int)
    # Counted from here: earlier tests in the same session may have dead-lettered poison on purpose.
    dead_before = _dead_lettered()
    prefix = f"mixed{uuid.uuid4().hex[:8]}"
    runs = [route_events(prefix, n) for n in range(ROUTES * chaos_scale())]

    def copies(messages: list[Message]) -> list[OutgoingMessage]:
        """Each event twice with its id; every other one a third time without headers."""
        out = [m.headered() for m in messages for _ in range(2)]
        out += [m.headerless() for m in messages[::2]]
        rng.shuffle(out)
        return out

    # Half the routes get their results and stories first (parked); then everything of every
    # route, shuffled across the three topics; then all of it once more after completion.
    early = [m for run in runs[::2] for m in run[2] + run[1]]
    everything = [m for run in runs for stage in run for m in stage]
    sent = await orchestrator.deliver(copies(early))
    sent += await orchestrator.deliver(copies(everything))
    await orchestrator.completed(prefix, len(runs))
    sent += await orchestrator.deliver(copies(everything))

    got = await orchestrator.snapshot(prefix)
    diff = _diff(got, clean)
    duplicates = sent - len(everything)
    print(
        f"\ncityguide duplicated+reordered: {len(runs)} routes, events {sent} ({len(everything)} distinct), "
        f"duplicates {duplicates}, reordered {len(early)} sent before their route, the rest shuffled "
        f"across topics, diff {diff} rows over {len(TABLES)} tables"
    )
    assert _dead_lettered() == dead_before
    assert got == clean
