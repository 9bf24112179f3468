"""What happens to each message: applied once, retried, or dead-lettered with its reason — and the
next message is handled either way. One runner per bus kind serves every test in this module (the
Kafka group join takes seconds); each test uses keys and ids of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import orjson
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from keel.core.bus import Bus, OutgoingMessage, Producer
from keel.core.consumer import ConsumerOptions, ConsumerRunner, RetryPolicy, Transactional
from keel.core.db import Database
from keel.core.events import Event, encode
from tests.integration.consumer.conftest import (
    DeadLetters,
    build_bus,
    consumed,
    dead_letters,
    event_record,
    running,
    unique,
)
from tests.integration.consumer.script import Effects, Script
from tests.support.bus import started_producer

MAX_ATTEMPTS = 3


@dataclass
class Harness:
    bus: Bus
    producer: Producer
    script: Script
    effects: Effects
    dlq: DeadLetters
    group: str
    topic: str  # envelope wire
    bare_topic: str  # bare wire, natural key `id`
    bare_group: str


def dead_lettered(dlq_topic: str, reason: str) -> float:
    return REGISTRY.get_sample_value("dlq_messages_total", {"topic": dlq_topic, "reason": reason}) or 0.0


@pytest_asyncio.fixture(scope="module", params=["memory", "kafka"])
async def harness(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[Harness]:
    bus = build_bus(request.param, request)
    db = Database.connect(pg_dsn, pool_size=5)
    effects = await Effects(db).create()
    script = Script()
    topic, bare_topic, dlq_topic = unique("scripted"), unique("scripted-bare"), unique("scripted.dlq")
    group, bare_group = unique("delivery"), unique("delivery-bare")
    retry = RetryPolicy(max_attempts=MAX_ATTEMPTS, base_s=0.01, max_s=0.05)
    envelope_runner = ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=Transactional(script.handle),
        db=db,
        dlq_topic=dlq_topic,
        options=ConsumerOptions(retry=retry),
    )
    bare_runner = ConsumerRunner(
        bus,
        group_id=bare_group,
        topics=[bare_topic],
        wire="bare",
        handler=Transactional(script.handle, natural_key=lambda e: e.payload["id"]),
        db=db,
        dlq_topic=dlq_topic,
        options=ConsumerOptions(retry=retry),
    )
    await bus.ensure_topics([topic, bare_topic, dlq_topic])
    async with (
        started_producer(bus) as producer,
        dead_letters(bus, dlq_topic) as dlq,
        running(envelope_runner),
        running(bare_runner),
    ):
        yield Harness(bus, producer, script, effects, dlq, group, topic, bare_topic, bare_group)
    await bus.close()
    await db.dispose()


def ids() -> tuple[str, str]:
    return f"id-{uuid.uuid4().hex[:10]}", f"key-{uuid.uuid4().hex[:10]}"


async def test_message_failing_every_attempt_is_dead_lettered_with_reason_and_attempts_and_the_next_is_handled(
    harness: Harness,
) -> None:
    h = harness
    bad, key = ids()
    after, _ = ids()
    dead_before = consumed(h.group, h.topic, "dlq")
    record = event_record(h.topic, bad, key=key, fail=99)

    await h.producer.send(record)
    await h.producer.send(event_record(h.topic, after, key=key))  # same key: same partition, behind it

    letter = await h.dlq.wait_for(key.encode())
    assert (letter.key, letter.value) == (record.key, record.value)
    headers = dict(letter.headers)
    assert headers["dlq-attempts"] == str(MAX_ATTEMPTS).encode()
    assert headers["dlq-error"] == f"scripted failure {MAX_ATTEMPTS}".encode()
    assert headers["dlq-error-type"] == b"RuntimeError"
    assert headers["dlq-original-topic"] == h.topic.encode()
    assert headers["dlq-consumer-group"] == h.group.encode()
    assert int(headers["dlq-original-partition"]) in range(6) and int(headers["dlq-original-offset"]) >= 0
    assert datetime.fromisoformat(headers["dlq-failed-at"].decode()).tzinfo is not None
    assert await h.effects.wait_for(after) == 1
    assert await h.effects.count(bad) == 0
    assert h.script.calls[bad] == MAX_ATTEMPTS
    assert consumed(h.group, h.topic, "dlq") == dead_before + 1
    # The metric's reason is the kind (`poison` at once, `exhausted` after the retries); the record's
    # header carries the error's type.
    assert dead_lettered(letter.topic, "exhausted") >= 1


@pytest.mark.parametrize(
    "value",
    [b"{not json", b"[1, 2]", b'{"id": NaN}', b'{"id": 1e999}', b"\xff\xfe{}", None],
    ids=["not-json", "not-an-object", "nan", "infinity", "invalid-utf8", "tombstone"],
)
async def test_undecodable_message_is_dead_lettered_at_once_and_the_next_is_handled(
    harness: Harness, value: bytes | None
) -> None:
    h = harness
    after, key = ids()

    await h.producer.send(OutgoingMessage(h.topic, value, key=key.encode()))
    await h.producer.send(event_record(h.topic, after, key=key))

    letter = await h.dlq.wait_for(key.encode())
    assert letter.value == value
    assert dict(letter.headers)["dlq-attempts"] == b"1"
    assert dict(letter.headers)["dlq-error-type"] == b"PoisonMessage"
    assert await h.effects.wait_for(after) == 1
    assert dead_lettered(letter.topic, "poison") >= 1


async def test_message_the_handler_rejects_as_invalid_is_dead_lettered_without_retries(
    harness: Harness,
) -> None:
    h = harness
    bad, key = ids()

    await h.producer.send(event_record(h.topic, bad, key=key, invalid=True))

    letter = await h.dlq.wait_for(key.encode())
    assert dict(letter.headers)["dlq-error"] == f"schema: {bad} is invalid".encode()
    assert dict(letter.headers)["dlq-attempts"] == b"1"
    assert h.script.calls[bad] == 1


async def test_message_failing_twice_then_succeeding_is_applied_once(harness: Harness) -> None:
    h = harness
    flaky, key = ids()
    retried_before = consumed(h.group, h.topic, "retried")

    await h.producer.send(event_record(h.topic, flaky, key=key, fail=2))

    assert await h.effects.wait_for(flaky) == 1
    assert h.script.calls[flaky] == 3
    assert consumed(h.group, h.topic, "retried") - retried_before == 2


async def test_same_event_delivered_twice_has_one_effect(harness: Harness) -> None:
    h = harness
    twice, key = ids()
    marker, _ = ids()
    record = event_record(h.topic, twice, key=key, event_id=str(uuid.uuid4()))
    duplicates_before = consumed(h.group, h.topic, "duplicate")

    await h.producer.send(record)
    await h.producer.send(record)  # a redelivery: same event id
    await h.producer.send(event_record(h.topic, marker, key=key))  # once this is applied, both were seen

    await h.effects.wait_for(marker)
    assert await h.effects.count(twice) == 1
    assert consumed(h.group, h.topic, "duplicate") - duplicates_before == 1


async def test_bare_message_without_event_id_is_deduplicated_by_its_natural_key(harness: Harness) -> None:
    h = harness
    order, key = ids()
    marker, _ = ids()
    outside = OutgoingMessage(h.bare_topic, orjson.dumps({"id": order}), key=key.encode())  # no headers

    await h.producer.send(outside)
    await h.producer.send(outside)
    await h.producer.send(OutgoingMessage(h.bare_topic, orjson.dumps({"id": marker}), key=key.encode()))

    await h.effects.wait_for(marker)
    assert await h.effects.count(order) == 1
    assert consumed(h.bare_group, h.bare_topic, "duplicate") >= 1


async def test_bare_message_without_event_id_or_natural_key_is_dead_lettered(harness: Harness) -> None:
    h = harness
    _, key = ids()

    await h.producer.send(OutgoingMessage(h.bare_topic, b'{"name": "no id"}', key=key.encode()))

    letter = await h.dlq.wait_for(key.encode())
    assert b"natural key" in dict(letter.headers)["dlq-error"]


async def test_traceparent_header_reaches_the_handler(harness: Harness) -> None:
    h = harness
    traced, key = ids()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = Event(
        "scripted.happened", {"id": traced}, key=key, headers=(("traceparent", traceparent.encode()),)
    )

    await h.producer.send(encode(event, h.bare_topic, "bare"))

    await h.effects.wait_for(traced)
    assert await h.effects.traceparent(traced) == traceparent
