"""Rebalances: a member joining mid-stream takes over partitions without losing or doubling an
effect; a batch whose partitions moved away is committed in vain, logged, and redone harmlessly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from keel.core.bus import Bus
from keel.core.bus.memory import MemoryBus
from keel.core.consumer import ConsumerOptions, ConsumerRunner, Transactional
from keel.core.db import Database
from tests.integration.consumer.conftest import (
    PARTITIONS,
    consumed_now,
    event_record,
    running,
    unique,
)
from tests.integration.consumer.script import Effects, Script
from tests.support.bus import keys_on_distinct_partitions, started_producer
from tests.support.eventually import eventually


@pytest_asyncio.fixture
async def db(fresh_pg_dsn: str) -> AsyncIterator[Database]:
    # Room for two members' transactions on every partition at once, plus those left to finish
    # alone at a revoke: each holds a connection.
    database = Database.connect(fresh_pg_dsn, pool_size=15)
    yield database
    await database.dispose()


def _runner(bus: Bus, db: Database, script: Script, topic: str, group: str) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=Transactional(script.handle),
        db=db,
        dlq_topic=f"{topic}.dlq",
        # Short, so the test sees the in-flight batch abandoned rather than waited for.
        options=ConsumerOptions(batch_size=50, revoke_timeout_s=0.2),
    )


async def _rows(db: Database) -> int:
    async with db.connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM effects"))


async def test_member_joining_mid_stream_takes_partitions_and_every_event_applies_once(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    first, second = Script(), Script()
    topic, group = unique("join"), unique("join-group")
    async with (
        started_producer(memory_bus) as producer,
        running(_runner(memory_bus, db, first, topic, group)),
    ):
        await producer.send_many([event_record(topic, f"e{n}", key=f"k{n}") for n in range(200)])
        async with running(_runner(memory_bus, db, second, topic, group)):
            await producer.send_many([event_record(topic, f"e{n}", key=f"k{n}") for n in range(200, 400)])
            await eventually(lambda: _rows(db), until=lambda n: n >= 400, timeout_s=20, what="400 effects")

    async with db.connection() as conn:
        doubled = await conn.fetch("SELECT id FROM effects GROUP BY id HAVING count(*) > 1")
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM effects") == 400
    assert doubled == []
    assert first.applied and second.applied  # both members did part of the work


async def test_commit_refused_after_a_rebalance_is_logged_and_the_new_owner_redoes_the_batch_harmlessly(
    bus: Bus, db: Database, effects: Effects, caplog: pytest.LogCaptureFixture
) -> None:
    first_script, second_script = Script(), Script()
    second_script.gates = first_script.gates  # one gate holds whichever member handles a record first
    topic, group = unique("moved"), unique("moved-group")
    keys = [k.decode() for k in keys_on_distinct_partitions(PARTITIONS, PARTITIONS, prefix=unique("k"))]
    await bus.ensure_topics([topic])
    caplog.set_level(logging.WARNING, logger="keel.core.consumer")
    first_runner = _runner(bus, db, first_script, topic, group)
    async with started_producer(bus) as producer, running(first_runner) as first:
        # One record per partition, each held inside its handler (transaction open) until the gate opens.
        await producer.send_many([event_record(topic, f"held-{k}", key=k, gate="g") for k in keys])
        await eventually(lambda: _waiting(first_script), until=lambda n: n == PARTITIONS, timeout_s=20)

        async with running(_runner(bus, db, second_script, topic, group)):
            # The second member got partitions and redoes their records: its inbox inserts wait on
            # the rows the first member's open transactions hold.
            await eventually(
                lambda: _lock_waits(db), until=lambda n: n >= 1, timeout_s=30, what="redo blocked"
            )
            first_script.gate("g").set()
            await eventually(lambda: _rows(db), until=lambda n: n == PARTITIONS, timeout_s=20)
            await eventually(
                lambda: _logged(caplog), until=lambda text: "commit refused after a rebalance" in text
            )
            await eventually(
                lambda: consumed_now(group, topic, "duplicate"), until=lambda n: n >= 1, timeout_s=30
            )

            # The first member's loop survived the refused commit and still handles its partitions.
            await producer.send_many([event_record(topic, f"after-{k}", key=k) for k in keys])
            await eventually(lambda: _rows(db), until=lambda n: n == 2 * PARTITIONS, timeout_s=30)
            assert not first.done()
            assert any(ident.startswith("after-") for ident in first_script.applied)
            assert any(ident.startswith("after-") for ident in second_script.applied)

    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM effects") == 2 * PARTITIONS
        assert await conn.fetchval("SELECT count(*) FROM effects") == 2 * PARTITIONS


async def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text


async def _waiting(script: Script) -> int:
    return len(script.waiting)


async def _lock_waits(db: Database) -> int:
    async with db.connection() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
