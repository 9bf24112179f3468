"""The whole pipeline on a real broker: create → outbox → relay → tickets.events → consumer → notifications.

Every committed ticket yields exactly one `ticket.created` on the topic and one notification, across
a restart of the relay and the consumer in the middle of the stream."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson

from keel.core.bus import OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.core.db import libpq_dsn
from keel.core.runtime import build_app
from keel.tickets.spec import SPEC
from tests.integration.tickets.conftest import ticket_body
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers
from tests.support.topic_log import KafkaTopicLog

ROOT = Path(__file__).resolve().parents[3]


async def _create_many(app, user: str, count: int) -> list[str]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/tickets", json=ticket_body(title=f"ticket {i}"), headers={"X-User-Id": user})
                for i in range(count)
            )
        )
    assert {r.status_code for r in responses} == {201}
    return [r.json()["id"] for r in responses]


async def _notifications(dsn: str, user: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT ticket_id::text FROM notifications WHERE user_id = $1", user)
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def test_every_ticket_yields_one_event_and_one_notification_across_restarts(
    fresh_pg_dsn, redis_url, kafka_brokers, make_settings, monkeypatch
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    settings = make_settings(
        postgres_dsn=fresh_pg_dsn, redis_url=redis_url, kafka_brokers=kafka_brokers, consumer_max_attempts=3
    )
    user = f"pipeline-{uuid.uuid4().hex[:8]}"

    # First process: half the tickets, then it stops (relay and consumer mid-stream).
    first = build_app([SPEC], settings)
    async with first.router.lifespan_context(first):
        ids = await _create_many(first, user, 150)
    # Second process on the same database picks up whatever the first left behind.
    second = build_app([SPEC], settings)
    async with second.router.lifespan_context(second):
        ids += await _create_many(second, user, 150)
        notified = await eventually(
            lambda: _notifications(fresh_pg_dsn, user),
            until=lambda n: len(n) >= 300,
            timeout_s=60,
            what="a notification per ticket",
        )
    assert sorted(notified) == sorted(ids)  # one each, no more

    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
    finally:
        await conn.close()
    assert unpublished == 0

    records = await _ticket_events_of(kafka_brokers, user)
    created = [orjson.loads(r.value) for r in records]
    assert len(records) == 300  # nothing on the topic beyond one event per ticket
    assert sorted(e["payload"]["ticket_id"] for e in created) == sorted(ids)
    assert {e["event_type"] for e in created} == {"ticket.created"}
    assert all(r.key.decode() == orjson.loads(r.value)["payload"]["ticket_id"] for r in records)
    print(
        f"300 tickets -> {len(records)} events on tickets.events, {len(notified)} notifications, 0 unpublished"
    )


async def _ticket_events_of(brokers: list[str], user: str):
    """Every record on tickets.events (the whole topic, to its end) created by `user`."""
    log = await KafkaTopicLog(brokers, "tickets.events").open()
    try:
        records = await log.read(await log.size(), within_s=30)
    finally:
        await log.close()
    return [r for r in records if _created_by(r.value) == user]


def _created_by(value: bytes | None) -> str | None:
    """The event's `created_by`; None for a record that is no event (another test's poison message:
    the topic is shared by the session, in whatever order its tests run)."""
    try:
        return orjson.loads(value or b"")["payload"].get("created_by")  # type: ignore[no-any-return]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


async def test_relay_killed_after_the_ack_republishes_and_the_inbox_keeps_one_notification_each(
    fresh_pg_dsn, kafka_brokers, make_settings, monkeypatch
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    settings = make_settings(postgres_dsn=fresh_pg_dsn, kafka_brokers=kafka_brokers, outbox_shards=4)
    user = f"crash-{uuid.uuid4().hex[:8]}"
    writer = build_app([SPEC], settings, run_workers=False)  # API only: the outbox fills up
    async with writer.router.lifespan_context(writer):
        ids = await _create_many(writer, user, 60)

    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.outbox_relay_process",
        libpq_dsn(fresh_pg_dsn),
        ",".join(kafka_brokers),
        "4",
        "20",
        cwd=ROOT,
        env={**os.environ, "KEEL_CRASH_POINTS": "outbox.after_send"},
    )
    assert await asyncio.wait_for(relay.wait(), 60) == 137  # died like kill -9 after the broker's ack
    crashed = len(await _ticket_events_of(kafka_brokers, user))
    assert 1 <= crashed <= 20

    service = build_app([SPEC], settings)  # relay + notifications consumer
    async with service.router.lifespan_context(service):
        notified = await eventually(
            lambda: _notifications(fresh_pg_dsn, user),
            until=lambda n: len(n) >= 60,
            timeout_s=60,
            what="a notification per ticket",
        )
        on_topic = await _ticket_events_of(kafka_brokers, user)
    assert sorted(notified) == sorted(ids)  # the republished batch had no second effect
    assert len(on_topic) == 60 + crashed  # duplicates on the wire, not in the effect
    print(f"relay killed after ack: {crashed} events sent twice, 60 tickets, {len(notified)} notifications")


async def test_a_poison_event_on_tickets_events_lands_in_the_dlq(fresh_pg_dsn, kafka_brokers, make_settings):
    settings = make_settings(postgres_dsn=fresh_pg_dsn, kafka_brokers=kafka_brokers)
    bus = KafkaBus(kafka_brokers, idempotence=idempotent_producers())
    producer = bus.producer()
    app = build_app([SPEC], settings)
    async with app.router.lifespan_context(app):
        await producer.start()
        try:
            marker = uuid.uuid4().hex
            await producer.send(
                OutgoingMessage("tickets.events", f"not json {marker}".encode(), key=b"poison")
            )
        finally:
            await producer.stop()
        dlq = await KafkaTopicLog(kafka_brokers, "tickets.dlq").open()
        try:

            async def poisoned():
                records = await dlq.read(1, within_s=30)
                return next((r for r in records if marker.encode() in (r.value or b"")), None)

            record = await eventually(
                poisoned, until=bool, timeout_s=40, what="the poison message in tickets.dlq"
            )
        finally:
            await dlq.close()
            await bus.close()
    assert record.header("dlq-original-topic") == b"tickets.events"
    assert b"JSON" in (record.header("dlq-error") or b"")
