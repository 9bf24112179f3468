"""Stopping, metrics, handlers without a database, and failures that are the infrastructure's."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from keel.core.bus.memory import MemoryBus
from keel.core.consumer import ConsumerOptions, ConsumerRunner, Idempotent, RetryPolicy, Transactional
from keel.core.db import Database
from keel.core.events import Event
from tests.integration.consumer.conftest import (
    PARTITIONS,
    consumed,
    event_record,
    running,
    unique,
)
from tests.integration.consumer.script import Effects, Script
from tests.support.bus import kafka_partition, started_producer
from tests.support.eventually import eventually


def _runner(bus: MemoryBus, db: Database, script: Script, topic: str, **options: object) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=unique("life-group"),
        topics=[topic],
        wire="envelope",
        handler=Transactional(script.handle),
        db=db,
        dlq_topic=f"{topic}.dlq",
        options=ConsumerOptions(**options),  # type: ignore[arg-type]
    )


async def test_stop_finishes_the_batch_in_flight_and_commits_its_offset(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic = unique("stop")
    runner = _runner(memory_bus, db, script, topic)
    async with started_producer(memory_bus) as producer:
        await producer.send(event_record(topic, "in-flight", key="k", gate="g"))
    task = asyncio.create_task(runner.run())
    await eventually(lambda: _waiting(script), until=lambda n: n == 1, what="handler running")

    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0)  # a yield, not a wait: stop() has begun
    assert not stopping.done()  # it waits for the handler in flight
    script.gate("g").set()
    await stopping

    # Once stop() returns, the effect is committed and so is the offset: nothing is delivered again.
    assert await effects.count("in-flight") == 1
    await task
    member = memory_bus.consumer([topic], runner.group_id)
    await member.start()
    assert sum((await member.lag()).values()) == 0
    await member.stop()


async def test_lag_gauge_shows_messages_waiting_behind_a_busy_handler(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic = unique("lag")
    runner = _runner(memory_bus, db, script, topic, batch_size=1, lag_interval_s=0.02)
    partition = str(kafka_partition(b"k", PARTITIONS))
    labels = {"group": runner.group_id, "topic": topic, "partition": partition}
    async with started_producer(memory_bus) as producer:
        await producer.send(event_record(topic, "busy", key="k", gate="g"))
        for n in range(9):
            await producer.send(event_record(topic, f"queued-{n}", key="k"))

    async with running(runner):
        # Ten published; the member reads ahead at most two (2 x batch_size) while its handler is busy.
        await eventually(lambda: _lag(labels), until=lambda lag: lag is not None and lag >= 8, what="lag")
        script.gate("g").set()
        await eventually(lambda: _lag(labels), until=lambda lag: lag == 0, what="lag drained")
        await effects.wait_for("queued-8")
        handled = REGISTRY.get_sample_value(
            "job_duration_seconds_count", {"task": runner.group_id, "outcome": "ok"}
        )
        assert handled == 10

    assert await _lag(labels) is None  # a stopped member reports no lag for partitions it left


async def test_non_transactional_handler_applies_idempotent_effects_without_a_database(
    memory_bus: MemoryBus, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    topic = unique("plain")

    async def remember(event: Event) -> None:
        await redis_client.set(f"{key_prefix}{event.key}", event.payload["id"])

    runner = ConsumerRunner(
        memory_bus,
        group_id=unique("plain-group"),
        topics=[topic],
        wire="envelope",
        handler=Idempotent(remember),
        dlq_topic=f"{topic}.dlq",
    )
    async with started_producer(memory_bus) as producer, running(runner):
        for version in ("v1", "v2", "v2"):  # the last one a redelivery: overwriting is harmless
            await producer.send(event_record(topic, version, key="video-1"))
        await eventually(
            lambda: _consumed_now(runner.group_id, topic), until=lambda n: n == 3, what="3 handled"
        )
    assert await redis_client.get(f"{key_prefix}video-1") == b"v2"


async def test_transient_failures_do_not_spend_a_messages_attempts(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic = unique("outage")
    runner = _runner(
        memory_bus, db, script, topic, retry=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.02)
    )
    async with started_producer(memory_bus) as producer, running(runner):
        await producer.send(event_record(topic, "survives", key="k", transient=4))
        await effects.wait_for("survives")

    assert script.calls["survives"] == 5  # four connection errors, then applied; never dead-lettered
    assert consumed(runner.group_id, topic, "dlq") == 0


def test_transactional_handler_without_a_database_is_refused(memory_bus: MemoryBus) -> None:
    with pytest.raises(ValueError, match="needs a database"):
        ConsumerRunner(
            memory_bus,
            group_id="g",
            topics=["t"],
            wire="envelope",
            handler=Transactional(Script().handle),
            dlq_topic="t.dlq",
        )


async def _waiting(script: Script) -> int:
    return len(script.waiting)


async def _lag(labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value("kafka_consumer_lag", labels)


async def _consumed_now(group: str, topic: str) -> float:
    return consumed(group, topic, "ok")
