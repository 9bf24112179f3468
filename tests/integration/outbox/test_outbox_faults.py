"""The relay when things break: the broker unreachable or going away, and the relay killed between
the broker's ack and marking the rows. Rows are never lost: they wait, then drain; a killed relay's
batch is published again (a duplicate, never a gap)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from keel.core.db import Database, libpq_dsn
from keel.core.events import decode
from keel.core.outbox import Outbox, OutboxRelay
from tests.integration.outbox.conftest import (
    Broker,
    kafka_bus,
    make_events,
    running,
    unpublished,
    write_events,
)
from tests.support import servers
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy
from tests.support.topic_log import open_topic_log

ROOT = Path(__file__).resolve().parents[3]


async def test_unreachable_broker_leaves_rows_unpublished_and_they_drain_when_a_producer_is_back(
    db: Database,
    outbox: Outbox,
    kafka_brokers: list[str],
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
    caplog: pytest.LogCaptureFixture,
):
    name = topic("tickets.events")
    events = make_events(30, keys=5)
    await write_events(db, outbox, events, name)
    # Nothing listens on this port: every connection attempt is refused.
    dead = kafka_bus([f"127.0.0.1:{servers.free_port()}"], timeout_s=0.5)
    stuck = new_relay(db, dead.producer(), backoff_base_s=0.02, backoff_max_s=0.1, name="relay-stuck")

    with caplog.at_level(logging.DEBUG, logger="keel.outbox"):
        async with running(stuck):
            first = await stuck.stats()
            await eventually(
                lambda: stuck.consecutive_failures, until=lambda n: n >= 4, timeout_s=20, what="retries"
            )
            later = await eventually(
                stuck.stats, until=lambda s: s.lag_s > first.lag_s + 0.2, what="lag growing"
            )
            assert await unpublished(db) == len(events)
    await dead.close()

    warnings = [r for r in caplog.records if r.name == "keel.outbox" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, "one warning per outage, not one per retry"
    assert "cannot publish" in warnings[0].getMessage()
    assert later.pending == len(events)
    assert stuck.published == 0

    working = kafka_bus(kafka_brokers)
    log = await open_topic_log(working, name)
    producer = working.producer()
    await producer.start()
    async with running(new_relay(db, producer, name="relay-back")):
        got = await log.read(len(events))
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, what="rows marked")
    assert sorted(decode(m, "envelope").event_id for m in got) == sorted(e.event_id for e in events)
    await log.close()
    await working.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A private broker that clients reach only through a fault proxy: it advertises the proxy's
    address, and Kafka clients reconnect to the advertised address."""
    broker_port = servers.free_port()
    proxy = await TcpProxy(broker_port).start()
    with servers.running(servers.kafka_broker(broker_port, advertised_port=proxy.port)):
        yield proxy
        await proxy.close()


async def test_relay_recovers_by_itself_when_the_broker_comes_back(
    db: Database,
    outbox: Outbox,
    proxy: TcpProxy,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
    caplog: pytest.LogCaptureFixture,
):
    bus = kafka_bus([f"127.0.0.1:{proxy.port}"], timeout_s=2.0)
    name = topic("orders")
    log = await open_topic_log(bus, name)
    producer = bus.producer()
    await producer.start()
    before, during = make_events(10, keys=3), make_events(40, keys=4)
    relay = new_relay(db, producer, backoff_base_s=0.05, backoff_max_s=0.5, send_timeout_s=3.0)

    with caplog.at_level(logging.WARNING, logger="keel.outbox"):
        async with running(relay):
            await write_events(db, outbox, before, name)
            await eventually(lambda: unpublished(db), until=lambda n: n == 0, what="first rows published")
            proxy.set_mode("refuse")
            await write_events(db, outbox, during, name)
            await eventually(
                lambda: relay.consecutive_failures, until=lambda n: n >= 2, timeout_s=30, what="outage seen"
            )
            assert await unpublished(db) == len(during)
            proxy.set_mode("pass")
            await eventually(
                lambda: unpublished(db), until=lambda n: n == 0, timeout_s=60, what="backlog drained"
            )
        got = await log.read(len(before) + len(during), within_s=30)

    ids = Counter(decode(m, "envelope").event_id for m in got)
    assert set(ids) == {e.event_id for e in before + during}
    messages = [r.getMessage() for r in caplog.records if r.name == "keel.outbox"]
    assert sum("cannot publish" in m for m in messages) == 1
    assert sum("publishing again" in m for m in messages) == 1
    await log.close()
    await bus.close()


async def test_relay_recovers_when_its_database_connections_are_killed(
    db: Database,
    fresh_pg_dsn: str,
    pg_server_dsn: str,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("orders")
    first, second = make_events(10, keys=3), make_events(10, keys=3)
    relay_db = Database.connect(fresh_pg_dsn, pool_size=2)
    relay = new_relay(relay_db, await broker.producer(), backoff_base_s=0.02, backoff_max_s=0.2)
    log = await broker.log(name)

    async with running(relay):
        await write_events(db, outbox, first, name)
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, what="first rows published")
        # A failover or restart, as the relay sees it: every connection it holds dies under it.
        mine = await _backends(relay_db)
        admin = await asyncpg.connect(pg_server_dsn)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM unnest($1::int[]) pid", mine
        )
        await admin.close()
        assert killed >= 1
        await write_events(db, outbox, second, name)
        await eventually(
            lambda: unpublished(db), until=lambda n: n == 0, timeout_s=30, what="second rows published"
        )
        got = await log.read(len(first) + len(second))
    await relay_db.dispose()

    assert {decode(m, "envelope").event_id for m in got} == {e.event_id for e in first + second}
    await log.close()


async def _backends(db: Database) -> list[int]:
    """The server pids of every connection in `db`'s pool (checked out together, so all distinct)."""
    async with contextlib.AsyncExitStack() as stack:
        pids = []
        for _ in range(db.engine.pool.size()):
            uow = await stack.enter_async_context(db.unit_of_work())
            pids.append(await (await uow.raw()).fetchval("SELECT pg_backend_pid()"))
    return pids


async def test_relay_killed_between_ack_and_mark_republishes_the_batch_and_loses_nothing(
    db: Database,
    fresh_pg_dsn: str,
    outbox: Outbox,
    kafka_brokers: list[str],
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("tickets.events")
    events = make_events(60, keys=6)
    await write_events(db, outbox, events, name)
    bus = kafka_bus(kafka_brokers)
    log = await open_topic_log(bus, name)

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.outbox_relay_process",
        libpq_dsn(fresh_pg_dsn),
        ",".join(kafka_brokers),
        str(outbox.shards),
        "25",
        "2",  # two batches in flight, as the relay runs by default
        cwd=ROOT,
        env={**os.environ, "KEEL_CRASH_POINTS": "outbox.after_send"},
    )
    code = await asyncio.wait_for(child.wait(), 60)
    assert code == 137, "the relay died at the crash point"

    crashed = await log.read(1)  # the batch the broker acked before the relay died
    crashed += await log.read(await log.size() - len(crashed))
    # Up to one batch of 25 per publish loop had reached the broker when the first ack killed the process.
    assert 1 <= len(crashed) <= 25 * 2
    assert await unpublished(db) == len(events), "nothing was marked: the relay died before marking"

    producer = bus.producer()
    await producer.start()
    async with running(new_relay(db, producer)):
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, timeout_s=30, what="rows marked")
        rest = await log.read(len(events))

    seen = Counter(decode(m, "envelope").event_id for m in crashed + rest)
    assert set(seen) == {e.event_id for e in events}, "no event lost"
    duplicated = {i for i, n in seen.items() if n == 2}
    assert duplicated == {decode(m, "envelope").event_id for m in crashed}, "only the crashed batch twice"
    assert max(seen.values()) == 2
    assert await log.size() == len(events) + len(crashed)
    await log.close()
    await bus.close()
