"""Dead letters on Apache Kafka: listed by reason, shown, replayed (twice, safely; once with an edited
payload) and purged, with the mark kept in a consumer group and every run in the audit table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest_asyncio
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from keel import cli
from keel.core.bus import Message, OutgoingMessage
from keel.core.bus.factory import build_bus
from keel.core.bus.kafka import KafkaBus
from keel.core.consumer.dlq import dead_letter_record
from keel.core.db import Database
from keel.core.events import Event, encode
from keel.core.settings import Settings
from keel.ops.audit import Audit
from keel.ops.dlq import DeadLetterOps
from keel.ops.gauges import DeadLetterGauge
from keel.ops.records import Selection
from keel.ops.topics import topic_admin
from keel.orders.fake import fake_order
from keel.orders.schemas import ORDER_EVENT
from tests.integration.orders.conftest import row_counts, send, served, serving
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers


@pytest_asyncio.fixture
async def ops(order_settings, kafka_brokers) -> AsyncIterator[tuple[DeadLetterOps, Database]]:
    settings = order_settings()
    bus = KafkaBus(kafka_brokers, idempotence=idempotent_producers(), dlq_retention_ms=30 * 86_400_000)
    db = Database.connect(settings.postgres_dsn, pool_size=2)
    admin = topic_admin(bus)
    producer = bus.producer()
    await producer.start()
    try:
        yield DeadLetterOps(admin, producer, [settings.dlq_topic], Audit(db)), db
    finally:
        await producer.stop()
        await admin.close()
        await bus.close()
        await db.dispose()


async def pending(ops: DeadLetterOps, topic: str, count: int) -> dict:
    summary: dict = await eventually(
        lambda: ops.summary(topic),
        until=lambda s: s["pending"] == count,
        timeout_s=30,
        what=f"{count} pending",
    )
    return summary


def replayed_total(topic: str) -> float:
    return REGISTRY.get_sample_value("dlq_replayed_total", {"topic": topic}) or 0.0


async def test_a_poison_order_is_listed_shown_and_served_once_replayed_with_its_payload_fixed(
    order_settings, producer, rng, ops
):
    dlq, _ = ops
    settings = order_settings()
    order = fake_order(rng)
    broken = {**order, "sm_id": "ninety-nine"}
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [broken])
        summary = await pending(dlq, settings.dlq_topic, 1)
        assert summary["by_reason"] == {"PoisonMessage": 1}
        assert summary["by_source_topic"] == {settings.kafka_topic: 1}
        [record] = await dlq.records(settings.dlq_topic)
        shown = await dlq.show(record["id"])
        assert "sm_id" in shown["error"] and shown["attempts"] == 1 and shown["key"] == order["order_uid"]
        assert orjson.loads(shown["payload"]) == broken and not shown["replayed"]
        before = replayed_total(settings.dlq_topic)

        first = await dlq.replay(
            settings.dlq_topic,
            Selection(ids=frozenset({record["id"]})),
            actor="tester",
            payload=orjson.dumps(order),
        )
        response = await served(client, order["order_uid"])
        again = await dlq.replay(settings.dlq_topic, Selection(ids=frozenset({record["id"]})), actor="tester")

    assert orjson.loads(response.content) == order
    assert (len(first.done), len(again.done), again.skipped) == (1, 0, [record["id"]])
    assert (await dlq.summary(settings.dlq_topic))["pending"] == 0
    assert (await dlq.show(record["id"]))["replayed"] is True
    assert replayed_total(settings.dlq_topic) - before == 1
    [audit] = await dlq.audit()
    assert (audit["actor"], audit["action"], audit["records"]) == ("tester", "replay", 1)
    assert audit["detail"]["edited_payload"] is True


async def test_replaying_twice_sends_each_record_once_and_duplicates_no_effect(
    order_settings, producer, rng, ops
):
    """Orders the consumer already stored come back from the DLQ (as after a DLQ write whose source
    commit was lost), with two poison ones behind them: a replay by reason sends the five once, a
    second run sends nothing, the rows stay one per order; replaying the poison ones dead-letters
    them again with a replay count."""
    dlq, _ = ops
    settings = order_settings()
    orders = [fake_order(rng) for _ in range(5)]
    events = [Event(ORDER_EVENT, o, key=o["order_uid"], event_id=str(uuid.uuid4())) for o in orders]
    originals = [encode(e, settings.kafka_topic, "bare") for e in events]
    async with serving(settings) as (_, client):
        await producer.send_many(originals)
        for o in orders:
            await served(client, o["order_uid"])
        letters = [
            dead_letter_record(
                _consumed(r, n),
                RuntimeError("database away"),
                dlq_topic=settings.dlq_topic,
                attempts=5,
                group_id=settings.kafka_group_id,
            )
            for n, r in enumerate(originals)
        ]
        poison = [OutgoingMessage(settings.kafka_topic, b"{not json", key=b"p") for _ in range(2)]
        await producer.send_many([*letters, *poison])
        await pending(dlq, settings.dlq_topic, 7)
        summary = await dlq.summary(settings.dlq_topic)
        poisoned = await dlq.records(settings.dlq_topic, Selection(reason="PoisonMessage"))

        first = await dlq.replay(settings.dlq_topic, Selection(reason="RuntimeError"), actor="tester")
        second = await dlq.replay(settings.dlq_topic, Selection(reason="RuntimeError"), actor="tester")
        poison_replay = await dlq.replay(settings.dlq_topic, Selection(), actor="tester")
        # The poison ones fail again and come back, marked as replayed once.
        await pending(dlq, settings.dlq_topic, 2)
        again = await dlq.records(settings.dlq_topic)
        counts = [await row_counts(settings.postgres_dsn, o["order_uid"]) for o in orders]
        inbox = await _inbox_rows(settings.postgres_dsn, [e.event_id for e in events])

    assert summary["by_reason"] == {"RuntimeError": 5, "PoisonMessage": 2}
    assert (len(first.done), len(second.done), len(poison_replay.done)) == (5, 0, 2)
    assert all(c["orders"] == 1 for c in counts)  # effects duplicated: 0
    assert inbox == 5  # each event handled once; the replayed copies were no-ops
    assert [r["replay_count"] for r in again] == [1, 1]
    # When they first failed is kept across the replay; their new failure is later.
    assert sorted(r["first_failed_at"] for r in again) == sorted(r["failed_at"] for r in poisoned)
    assert all(r["first_failed_at"] < r["failed_at"] for r in again)
    assert {r["headers"]["replayed-from"].rsplit("/", 2)[0] for r in again} == {settings.dlq_topic}
    assert sum(summary["marks"].values()) == 0
    assert sum((await dlq.summary(settings.dlq_topic))["marks"].values()) == 7  # past the seven replayed


async def test_purge_moves_the_mark_and_delete_drops_the_prefix(order_settings, producer, ops):
    dlq, _ = ops
    settings = order_settings()
    await producer.send_many(
        [OutgoingMessage(settings.dlq_topic, b"x", key=b"k", headers=(("dlq-error-type", b"Boom"),))] * 3
    )
    await pending(dlq, settings.dlq_topic, 3)
    purged = await dlq.purge(settings.dlq_topic, Selection(reason="Boom"), actor="tester", delete=True)

    summary = await dlq.summary(settings.dlq_topic)
    assert len(purged.done) == 3 and sum(purged.deleted_before.values()) == 3
    assert (summary["pending"], summary["kept"]) == (0, 0)
    assert [a["action"] for a in await dlq.audit()] == ["purge"]


def _consumed(record: OutgoingMessage, offset: int) -> Message:
    return Message(record.topic, 0, offset, record.key, record.value, record.headers)


async def _inbox_rows(dsn: str, event_ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1)", event_ids
        )
    finally:
        await conn.close()
    return count


async def test_the_cli_lists_replays_and_shows_as_json(order_settings, producer, ops, kafka_brokers):
    """`keel dlq` as an operator runs it: a process configured by the environment, JSON out."""
    dlq, _ = ops
    settings = order_settings()
    letter = OutgoingMessage(
        settings.dlq_topic,
        b'{"a": 1}',
        key=b"k",
        headers=(("dlq-error-type", b"Boom"), ("dlq-original-topic", settings.kafka_topic.encode())),
    )
    await producer.send_many([letter, letter])
    await pending(dlq, settings.dlq_topic, 2)
    env = {
        "KAFKA_BROKERS": ",".join(kafka_brokers),
        "KAFKA_IDEMPOTENCE": str(idempotent_producers()).lower(),
        "KAFKA_TOPIC": settings.kafka_topic,
        "POSTGRES_DSN": settings.postgres_dsn,
    }
    listed = await keel(env, "dlq", "list", "--json")
    replayed = await keel(env, "dlq", "replay", settings.dlq_topic, "--reason", "Boom", "--json")
    again = await keel(env, "dlq", "replay", settings.dlq_topic, "--all", "--json")
    shown = await keel(env, "dlq", "show", replayed["records"][0], "--json")

    [summary] = [s for s in listed if s["topic"] == settings.dlq_topic]
    assert (summary["pending"], summary["by_reason"]) == (2, {"Boom": 2})
    assert (replayed["count"], again["count"]) == (2, 0)
    assert shown["replayed"] is True and shown["payload"] == '{\n  "a": 1\n}'
    assert [a["actor"].endswith("(cli)") for a in await dlq.audit()] == [True]


FAILED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def four_letters(topic: str) -> list[OutgoingMessage]:
    """Dead letters of orders failed at 12:00 and 12:10, of tickets.events at 12:05 and 12:20."""

    def letter(source: str, n: int, minutes: int) -> OutgoingMessage:
        consumed = Message(source, 0, n, b"k", b"{}", ())
        return dead_letter_record(
            consumed,
            RuntimeError("boom"),
            dlq_topic=topic,
            attempts=5,
            group_id="g",
            failed_at=FAILED + timedelta(minutes=minutes),
        )

    return [
        letter("orders", 0, 0),
        letter("tickets.events", 1, 5),
        letter("orders", 2, 10),
        letter("tickets.events", 3, 20),
    ]


async def test_the_documented_command_lines_select_by_window_fix_a_payload_and_purge(
    order_settings, producer, ops, kafka_brokers, tmp_path
):
    """docs/operations.md's `keel dlq` lines as written: a window in ISO 8601 with `Z`, a record
    replayed with its payload from a file, a purge that asks nothing and deletes."""
    dlq, _ = ops
    settings = order_settings()
    topic = settings.dlq_topic
    await producer.send_many(four_letters(topic))
    await pending(dlq, topic, 4)
    env = {
        "KAFKA_BROKERS": ",".join(kafka_brokers),
        "KAFKA_IDEMPOTENCE": str(idempotent_producers()).lower(),
        "KAFKA_TOPIC": settings.kafka_topic,
        "POSTGRES_DSN": settings.postgres_dsn,
    }
    window = await keel(
        env, "dlq", "replay", topic, "--source-topic", "orders",
        "--since", "2026-12-01T12:05Z", "--until", "2026-12-01T12:15Z", "--json",
    )  # fmt: skip
    [first] = [r["id"] for r in await dlq.records(topic, Selection()) if r["failed_at"] == FAILED.isoformat()]
    fixed = tmp_path / "fixed.json"
    fixed.write_bytes(b'{"fixed": true}')
    by_id = await keel(env, "dlq", "replay", topic, "--id", first, "--payload-file", str(fixed), "--json")
    shown = await keel(env, "dlq", "show", first, "--json")
    purged = await keel(
        env, "dlq", "purge", topic, "--source-topic", "tickets.events", "--yes", "--delete", "--json"
    )

    assert window["count"] == 1  # the orders record of 12:10, the one failed inside the window
    assert by_id["count"] == 1 and shown["replayed"] is True
    assert purged["count"] == 2
    assert (await dlq.summary(topic))["pending"] == 0


async def keel(env: dict[str, str], *args: str) -> Any:
    """The command in a thread of this process (its own event loop, as from a shell), not a new
    interpreter: importing Keel again would cost more than the commands."""
    result = await asyncio.to_thread(CliRunner().invoke, cli.app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


async def test_dead_letter_topics_are_created_with_dlq_retention_days_and_keep_their_own_after(
    kafka_brokers, topic
):
    settings = Settings(kafka_brokers=kafka_brokers, dlq_retention_days=3)
    bus = build_bus(settings)
    assert isinstance(bus, KafkaBus)
    dlq, events = topic("retained") + ".dlq", topic("retained")
    try:
        await bus.ensure_topics([dlq, events])
        admin = await bus.admin_client()
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, dlq), ConfigResource(ConfigResourceType.TOPIC, events)]
        )
    finally:
        await bus.close()
    retention = {r[3]: {c[0]: c[1] for c in r[4]}["retention.ms"] for r in response.resources}
    assert retention[dlq] == str(3 * 86_400_000)
    assert retention[events] != retention[dlq]  # other topics keep the broker's default

    # A later process with another DLQ_RETENTION_DAYS leaves the existing topic as an operator set it.
    again = build_bus(Settings(kafka_brokers=kafka_brokers, dlq_retention_days=30))
    assert isinstance(again, KafkaBus)
    try:
        await again.ensure_topics([dlq])
        admin = await again.admin_client()
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, dlq)])
    finally:
        await again.close()
    [resource] = response.resources
    assert {c[0]: c[1] for c in resource[4]}["retention.ms"] == str(3 * 86_400_000)


def pending_gauge(topic: str) -> float | None:
    return REGISTRY.get_sample_value("dlq_pending", {"topic": topic})


async def test_the_pending_gauge_follows_purges_by_source_topic_and_time_window(
    order_settings, producer, ops
):
    """What DeadLettersPending/Piling alert on: the console's gauge counts from offsets alone, on its
    timer, and falls as purges select by source topic and by when the records failed."""
    dlq, _ = ops
    topic = order_settings().dlq_topic
    await producer.send_many(four_letters(topic))
    gauge = DeadLetterGauge(dlq, interval_s=0.05)
    task = asyncio.create_task(gauge.run())
    try:
        await eventually(lambda: pending_gauge(topic), until=lambda v: v == 4, timeout_s=30, what="4 pending")

        by_source = await dlq.purge(topic, Selection(source_topic="tickets.events"), actor="tester")
        assert len(by_source.done) == 2
        await eventually(lambda: pending_gauge(topic), until=lambda v: v == 2, timeout_s=30, what="2 pending")

        window = Selection(since=FAILED + timedelta(minutes=5), until=FAILED + timedelta(minutes=15))
        in_window = await dlq.purge(topic, window, actor="tester")
        assert len(in_window.done) == 1  # the orders record of 12:10; 12:05 was purged, 12:20 too
        await eventually(lambda: pending_gauge(topic), until=lambda v: v == 1, timeout_s=30, what="1 pending")
    finally:
        await gauge.stop()
        await asyncio.wait_for(task, 10)
    [left] = await dlq.records(topic, Selection())
    assert (left["source_topic"], left["failed_at"]) == ("orders", FAILED.isoformat()), left
