"""Batch handlers: a backlog becomes few transactions; a bad message in a batch is dead-lettered
alone while the rest are applied; an event repeated within one batch is applied once."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import REGISTRY

from keel.core.bus import Bus, OutgoingMessage
from keel.core.bus.memory import MemoryBus
from keel.core.consumer import Batch, ConsumerOptions, ConsumerRunner, IdempotentBatch, RetryPolicy
from keel.core.db import Database
from keel.core.events import Event, PoisonMessage
from tests.integration.consumer.conftest import dead_letters, event_record, running, unique
from tests.integration.consumer.script import Effects, Script
from tests.support.bus import started_producer
from tests.support.eventually import eventually


def _runner(bus: Bus, db: Database, script: Script, topic: str, dlq: str) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=unique("batch-group"),
        topics=[topic],
        wire="envelope",
        handler=Batch(script.handle_batch),
        db=db,
        dlq_topic=dlq,
        options=ConsumerOptions(retry=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.05), batch_size=500),
    )


async def _rows(db: Database) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM effects"))


async def test_backlog_is_applied_in_few_transactions(bus: Bus, db: Database, effects: Effects) -> None:
    script = Script()
    topic = unique("backlog")
    async with started_producer(bus) as producer:
        await producer.send_many([event_record(topic, f"e{n}", key=f"k{n % 17}") for n in range(300)])

    async with running(_runner(bus, db, script, topic, unique("backlog.dlq"))):
        await eventually(lambda: _rows(db), until=lambda n: n == 300, timeout_s=20, what="300 effects")

    assert sum(script.batches) == 300
    assert len(script.batches) <= 30, script.batches  # ≥ 10 events per transaction on average
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM effects") == 300


async def test_bad_messages_in_a_batch_are_dead_lettered_alone_and_the_rest_applied(
    bus: Bus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic, dlq = unique("mixed"), unique("mixed.dlq")
    records = [event_record(topic, f"m{n}", key=f"k{n}") for n in range(20)]
    records[5] = event_record(topic, "m5", key="k5", invalid=True)
    records[12] = OutgoingMessage(topic, b"{not json", key=b"k12")
    async with started_producer(bus) as producer:
        await producer.send_many(records)

    async with dead_letters(bus, dlq) as letters, running(_runner(bus, db, script, topic, dlq)):
        await eventually(lambda: _rows(db), until=lambda n: n == 18, timeout_s=20, what="18 effects")
        invalid = await letters.wait_for(b"k5")
        undecodable = await letters.wait_for(b"k12")

    assert dict(invalid.headers)["dlq-error"] == b"schema: m5 is invalid"
    assert dict(undecodable.headers)["dlq-error-type"] == b"PoisonMessage"
    async with db.connection() as conn:
        applied = {r[0] for r in await conn.fetch("SELECT id FROM effects")}
    assert applied == {f"m{n}" for n in range(20)} - {"m5", "m12"}


async def test_event_repeated_within_one_batch_is_applied_once(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    bus = memory_bus
    script = Script()
    topic = unique("repeat")
    twice = event_record(topic, "twice", key="k", event_id="7d5c8f3e-0000-4000-8000-000000000001")
    async with started_producer(bus) as producer:
        await producer.send_many([twice, event_record(topic, "between", key="k"), twice])

    async with running(_runner(bus, db, script, topic, unique("repeat.dlq"))):
        await eventually(lambda: _rows(db), until=lambda n: n >= 2, timeout_s=20, what="effects")

    assert await effects.count("twice") == 1
    async with db.unit_of_work() as uow:
        inbox = await (await uow.raw()).fetchval("SELECT count(*) FROM processed_events")
    assert inbox == 2


async def test_an_idempotent_batch_handler_takes_a_backlog_in_few_calls_without_a_database_and_a_bad_record_alone(
    memory_bus: MemoryBus,
) -> None:
    """Stateless workers (story, tts) publish a fetched run at once: no inbox, no transaction; a bad
    record fails its batch, which is redone one record at a time so only that one is dead-lettered."""
    topic, dlq = unique("stateless"), unique("stateless.dlq")
    seen: list[str] = []
    calls: list[int] = []

    async def handle_batch(events: Sequence[Event]) -> None:
        if any(e.payload.get("invalid") for e in events):
            raise PoisonMessage("schema: a record in the batch is invalid")
        calls.append(len(events))
        seen.extend(e.payload["id"] for e in events)

    records = [event_record(topic, f"s{n}", key=f"k{n % 5}") for n in range(200)]
    records[77] = event_record(topic, "s77", key="bad", invalid=True)
    async with started_producer(memory_bus) as producer:
        await producer.send_many(records)

    runner = ConsumerRunner(
        memory_bus,
        group_id=unique("stateless-group"),
        topics=[topic],
        wire="envelope",
        handler=IdempotentBatch(handle_batch),
        dlq_topic=dlq,
        options=ConsumerOptions(retry=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.05), batch_size=100),
    )
    async with dead_letters(memory_bus, dlq) as letters, running(runner):
        await eventually(lambda: _len(seen), until=lambda n: n >= 199, timeout_s=20, what="199 records")
        dead = await letters.wait_for(b"bad")

    assert set(seen) == {f"s{n}" for n in range(200)} - {"s77"}
    assert dict(dead.headers)["dlq-error-type"] == b"PoisonMessage"
    # Batches of one only where the bad record's batch was redone; the rest came many at a time.
    assert len(calls) < 100, calls


async def _len(items: list[str]) -> int:
    return len(items)


async def _lag(group: str) -> float | None:
    """The group's fetch lag over its partitions (kafka_consumer_lag), None before it is reported."""
    lags = [
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "kafka_consumer_lag"
        for sample in metric.samples
        if sample.labels.get("group") == group
    ]
    return sum(lags) if lags else None


async def test_with_a_priority_the_most_urgent_fetched_records_go_first_and_every_offset_is_committed(
    memory_bus: MemoryBus,
) -> None:
    """A backlog where every tenth record is urgent: after the first batch the urgent ones come before
    the rest; each record is handled once, and a member that takes over afterwards gets only what came
    later (offsets were committed past records handled out of order)."""
    topic, group = unique("urgent"), unique("urgent-group")
    handled: list[str] = []

    async def handle_batch(events: Sequence[Event]) -> None:
        if not handled:  # a slow first batch: it ends once the runner has fetched the rest of the backlog
            await eventually(
                lambda: _lag(group), until=lambda lag: lag == 0, timeout_s=10, what="backlog fetched"
            )
        handled.extend(e.payload["id"] for e in events)

    def runner() -> ConsumerRunner:
        return ConsumerRunner(
            memory_bus,
            group_id=group,
            topics=[topic],
            wire="envelope",
            handler=IdempotentBatch(handle_batch, priority=lambda e: e.payload["rank"], lookahead=300),
            dlq_topic=unique("urgent.dlq"),
            options=ConsumerOptions(
                retry=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.05), batch_size=10, lag_interval_s=0.02
            ),
        )

    urgent = {f"u{n}" for n in range(0, 300, 10)}
    records = [
        event_record(
            topic, f"u{n}" if f"u{n}" in urgent else f"r{n}", key="one", rank=0 if f"u{n}" in urgent else 1
        )
        for n in range(300)
    ]
    async with started_producer(memory_bus) as producer:
        await producer.send_many(records)
        async with running(runner()):
            await eventually(
                lambda: _len(handled), until=lambda n: n >= 300, timeout_s=20, what="300 records"
            )
        assert len(handled) == len(set(handled)) == 300
        # The first batch is the head of the backlog; the 29 urgent ones left fill the next three.
        assert urgent <= set(handled[:40]), handled[:40]

        await producer.send_many([event_record(topic, "later", key="one", rank=1)])
        async with running(runner()):
            await eventually(
                lambda: _len(handled), until=lambda n: n >= 301, timeout_s=20, what="the later one"
            )
    assert handled[300:] == ["later"]
