"""A consumer that dies after its effect committed but before its offset did: the message is
delivered again, and the inbox makes the second delivery a no-op."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from keel.core.bus import Bus
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.bus.message import TopicPartition
from keel.core.consumer import ConsumerRunner, Transactional
from keel.core.db import Database
from tests.integration.consumer.conftest import (
    PARTITIONS,
    consumed_now,
    event_record,
    running,
    unique,
)
from tests.integration.consumer.crash_child import SESSION_TIMEOUT_MS, build_runner
from tests.integration.consumer.script import Effects, insert_effect
from tests.support.bus import started_producer
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers

ROOT = Path(__file__).resolve().parents[3]


def _runner(bus: Bus, db: Database, topic: str, group: str) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=Transactional(insert_effect),
        db=db,
        dlq_topic=f"{topic}.dlq",
    )


async def test_redelivery_after_a_lost_offset_commit_is_a_noop(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    topic, group = unique("lost-commit"), unique("lost-commit-group")
    async with started_producer(memory_bus) as producer:
        await producer.send(event_record(topic, "once", key="k"))
    async with running(_runner(memory_bus, db, topic, group)):
        await effects.wait_for("once")

    # The crash window, replayed: the effect is committed, the offset commit never happened.
    member = memory_bus.consumer([topic], group)
    await member.start()
    await member.commit({TopicPartition(topic, p): 0 for p in range(PARTITIONS)})
    await member.stop()

    async with running(_runner(memory_bus, db, topic, group)):
        await eventually(
            lambda: consumed_now(group, topic, "duplicate"), until=lambda n: n == 1, what="redelivery seen"
        )
    assert await effects.count("once") == 1


async def test_consumer_killed_between_effect_and_offset_commit_redelivers_as_a_noop(
    kafka_brokers: list[str], fresh_pg_dsn: str, db: Database, effects: Effects
) -> None:
    topic, group, dlq_topic = unique("crash"), unique("crash-group"), unique("crash.dlq")
    bus = KafkaBus(
        kafka_brokers,
        idempotence=idempotent_producers(),
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=300,
    )
    try:
        await bus.ensure_topics([topic, dlq_topic])
        async with started_producer(bus) as producer:
            await producer.send(event_record(topic, "survivor", key="k"))

        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.consumer.crash_child",
            kafka_brokers[0],
            fresh_pg_dsn,
            topic,
            group,
            dlq_topic,
            cwd=ROOT,
            env={**os.environ, "KEEL_CRASH_POINTS": "consumer.after_effect"},
            stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 137, stderr.decode()[-2000:]
        assert await effects.count("survivor") == 1

        async with running(build_runner(bus, db, topic, group, dlq_topic)):
            await eventually(
                lambda: consumed_now(group, topic, "duplicate"),
                until=lambda n: n == 1,
                timeout_s=40,
                what="redelivery seen",
            )
        assert await effects.count("survivor") == 1
    finally:
        await bus.close()
