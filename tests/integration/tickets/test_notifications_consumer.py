"""The notifications consumer as a batch handler on the real PostgreSQL: a backlog becomes one
notification per event in few transactions, and every way an event can arrive twice (twice in one
fetch, redelivered after its effect committed but not its offset, a consumer killed in that window)
still yields exactly one notification."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest_asyncio

from keel.core.bus import Bus, OutgoingMessage
from keel.core.bus.memory import MemoryBus
from keel.core.bus.message import TopicPartition
from keel.core.consumer import Batch, ConsumerOptions, ConsumerRunner, RetryPolicy
from keel.core.db import Database, UnitOfWork
from keel.core.events import Event, encode
from keel.tickets.handlers import NOTIFICATIONS, notify
from keel.tickets.schemas import TicketEvents
from tests.integration.consumer.conftest import (
    PARTITIONS,
    consumed_now,
    dead_letters,
    running,
    unique,
)
from tests.integration.tickets.notify_child import build_bus, build_runner
from tests.support.bus import started_producer
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[3]


@pytest_asyncio.fixture
async def memory_bus() -> AsyncIterator[MemoryBus]:
    built = MemoryBus(PARTITIONS)
    yield built
    await built.close()


def created(user: str, n: int, *, event_id: str | None = None, ticket_id: str | None = None) -> Event:
    ticket = ticket_id or str(uuid.uuid4())
    payload = {"ticket_id": ticket, "created_by": user, "title": f"ticket {n}"}
    if event_id is None:
        return Event(TicketEvents.CREATED, payload, key=ticket)
    return Event(TicketEvents.CREATED, payload, ticket, event_id)


def records(topic: str, events: Sequence[Event]) -> list[OutgoingMessage]:
    return [encode(e, topic, "envelope") for e in events]


class CountingBatches:
    """`notify` itself, counting the batches (= transactions) it is called with."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def __call__(self, events: Sequence[Event], uow: UnitOfWork) -> None:
        self.sizes.append(len(events))
        await notify(events, uow)


def runner(bus: Bus, db: Database, topic: str, group: str, handler: Batch = NOTIFICATIONS) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=handler,
        db=db,
        dlq_topic=f"{topic}.dlq",
        options=ConsumerOptions(retry=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.05)),
    )


async def notifications(db: Database, user: str) -> list[str]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT event_id::text FROM notifications WHERE user_id = $1", user)
    return [r[0] for r in rows]


async def test_backlog_becomes_one_notification_per_event_in_few_transactions(
    memory_bus: MemoryBus, db: Database
) -> None:
    topic, user = unique("notify-backlog"), unique("user")
    events = [created(user, n) for n in range(300)]
    closed = Event(TicketEvents.CLOSED, {"ticket_id": str(uuid.uuid4()), "created_by": user}, key="c")
    other = Event("ticket.commented", {"ticket_id": str(uuid.uuid4()), "created_by": user}, key="o")
    async with started_producer(memory_bus) as producer:
        await producer.send_many(records(topic, [*events, closed, other]))
    counting = CountingBatches()

    async with running(runner(memory_bus, db, topic, unique("notify-group"), Batch(counting))):
        stored = await eventually(
            lambda: notifications(db, user), until=lambda n: len(n) >= 301, timeout_s=30, what="notifications"
        )

    assert sorted(stored) == sorted(e.event_id for e in [*events, closed])  # none for other kinds
    assert sum(counting.sizes) == 302
    assert len(counting.sizes) <= 30, counting.sizes  # ≥ 10 events per transaction on average
    print(f"302 events -> {len(stored)} notifications in {len(counting.sizes)} transactions")


async def test_an_event_delivered_twice_in_one_fetch_and_again_later_is_one_notification(
    memory_bus: MemoryBus, db: Database
) -> None:
    topic, group, user = unique("notify-twice"), unique("notify-group"), unique("user")
    twice = created(user, 0, event_id=str(uuid.uuid4()))
    async with started_producer(memory_bus) as producer:
        await producer.send_many(records(topic, [twice, created(user, 1), twice]))
        async with running(runner(memory_bus, db, topic, group)):
            await eventually(
                lambda: notifications(db, user),
                until=lambda n: len(n) >= 2,
                what="2 notifications",
                timeout_s=30,
            )
            await producer.send_many(records(topic, [twice]))
            # Each partition's duplicates: the one in the first fetch, then the late one.
            await eventually(
                lambda: consumed_now(group, topic, "duplicate"),
                until=lambda n: n >= 2,
                what="duplicates seen",
                timeout_s=30,
            )

    stored = await notifications(db, user)
    assert len(stored) == 2 and stored.count(twice.event_id) == 1


async def test_redelivery_after_the_effect_committed_but_not_the_offset_is_a_noop(
    memory_bus: MemoryBus, db: Database
) -> None:
    topic, group, user = unique("notify-lost-commit"), unique("notify-group"), unique("user")
    events = [created(user, n) for n in range(50)]
    async with started_producer(memory_bus) as producer:
        await producer.send_many(records(topic, events))
    async with running(runner(memory_bus, db, topic, group)):
        await eventually(
            lambda: notifications(db, user),
            until=lambda n: len(n) >= 50,
            what="50 notifications",
            timeout_s=30,
        )

    # The crash window, replayed: every effect is committed, the offset commits never happened.
    member = memory_bus.consumer([topic], group)
    await member.start()
    await member.commit({TopicPartition(topic, p): 0 for p in range(PARTITIONS)})
    await member.stop()

    async with running(runner(memory_bus, db, topic, group)):
        await eventually(
            lambda: consumed_now(group, topic, "duplicate"),
            until=lambda n: n >= 50,
            what="50 redeliveries",
            timeout_s=30,
        )
    assert sorted(await notifications(db, user)) == sorted(e.event_id for e in events)


async def test_a_malformed_event_in_a_batch_is_dead_lettered_alone(
    memory_bus: MemoryBus, db: Database
) -> None:
    topic, user = unique("notify-mixed"), unique("user")
    events = [created(user, n) for n in range(20)]
    events[7] = created(user, 7, ticket_id="not-a-uuid")
    async with started_producer(memory_bus) as producer:
        await producer.send_many(records(topic, events))

    async with (
        dead_letters(memory_bus, f"{topic}.dlq") as letters,
        running(runner(memory_bus, db, topic, unique("notify-group"))),
    ):
        await eventually(
            lambda: notifications(db, user),
            until=lambda n: len(n) >= 19,
            what="19 notifications",
            timeout_s=30,
        )
        letter = await letters.wait_for(events[7].key.encode())  # type: ignore[union-attr]

    assert b"invalid id" in dict(letter.headers)["dlq-error"]
    assert sorted(await notifications(db, user)) == sorted(e.event_id for i, e in enumerate(events) if i != 7)


async def test_consumer_killed_between_commit_and_offset_commit_leaves_one_notification_each(
    kafka_brokers: list[str], fresh_pg_dsn: str, db: Database
) -> None:
    """The real process: the consumer dies (exit 137) right after a batch committed, before its
    offsets did; the next one gets the batch again and the inbox turns it into duplicates."""
    topic, group, user = unique("notify-crash"), unique("notify-crash-group"), unique("crash-user")
    events = [created(user, n) for n in range(40)]
    bus = build_bus(kafka_brokers[0])
    try:
        await bus.ensure_topics([topic, f"{topic}.dlq"])
        async with started_producer(bus) as producer:
            await producer.send_many(records(topic, events))

        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.tickets.notify_child",
            kafka_brokers[0],
            fresh_pg_dsn,
            topic,
            group,
            cwd=ROOT,
            env={**os.environ, "KEEL_CRASH_POINTS": "consumer.after_effect"},
            stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 137, stderr.decode()[-2000:]
        survived = await notifications(db, user)
        assert survived  # the crash came after a committed batch

        async with running(build_runner(bus, db, topic, group)):
            redelivered = await eventually(
                lambda: consumed_now(group, topic, "duplicate"),
                until=lambda n: n >= len(survived),
                timeout_s=40,
                what="the committed batch redelivered",
            )
            stored = await eventually(
                lambda: notifications(db, user),
                until=lambda n: len(n) >= 40,
                timeout_s=40,
                what="40 notifications",
            )
    finally:
        await bus.close()
    assert sorted(stored) == sorted(e.event_id for e in events)
    print(
        f"killed after committing {len(survived)} of 40; {redelivered:.0f} redelivered as duplicates; 40 notifications"
    )
