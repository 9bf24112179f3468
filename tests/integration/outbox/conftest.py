"""Fixtures for the outbox tests: the bus under the relay (memory, or Kafka on the real test broker),
a running relay, and small helpers that write events and read the outbox table back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from keel.core.bus import Bus, Producer
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.db import Database
from keel.core.events import Event, WireFormat
from keel.core.outbox import Outbox, OutboxRelay, RelayOptions
from keel.core.settings import Settings
from tests.support.servers import idempotent_producers
from tests.support.topic_log import TopicLog, open_topic_log

PARTITIONS = 6


def kafka_bus(brokers: list[str], **options: Any) -> KafkaBus:
    # The test broker's memory store refuses the idempotent producer (DESIGN.md, Contracts/Tests).
    return KafkaBus(brokers, idempotence=idempotent_producers(), partitions=PARTITIONS, **options)


@dataclass
class Broker:
    """The bus a relay publishes to, plus what a test needs to check what arrived."""

    bus: Bus
    kind: str

    async def producer(self) -> Producer:
        producer = self.bus.producer()
        await producer.start()
        return producer

    async def log(self, topic: str) -> TopicLog:
        return await open_topic_log(self.bus, topic)


@pytest_asyncio.fixture(params=["memory", "kafka"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    bus: Bus
    if request.param == "memory":
        bus = MemoryBus(PARTITIONS)
    else:
        bus = kafka_bus(request.getfixturevalue("kafka_brokers"))
    yield Broker(bus, request.param)
    await bus.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def outbox(settings: Settings) -> Outbox:
    return Outbox(settings.outbox_shards)


def make_events(count: int, keys: int, *, event_type: str = "thing.happened") -> list[Event]:
    """`count` events spread round-robin over `keys` keys; payload `seq` numbers each key's events."""
    seen: dict[str, int] = {}
    events = []
    for i in range(count):
        key = f"key-{i % keys}"
        seen[key] = seen.get(key, -1) + 1
        events.append(Event(event_type, {"n": i, "key": key, "seq": seen[key]}, key=key))
    return events


async def write_events(
    db: Database, outbox: Outbox, events: Sequence[Event], topic: str, wire: WireFormat = "envelope"
) -> None:
    async with db.unit_of_work() as uow:
        await outbox.add_many(uow, events, topic, wire)
        await uow.commit()


async def unpublished(db: Database) -> int:
    async with db.unit_of_work() as uow:
        conn = await uow.raw()
        return int(await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL"))


async def published(db: Database, event_id: str) -> bool:
    """The relay deleted the event's row: the broker acknowledged it."""
    async with db.unit_of_work() as uow:
        conn = await uow.raw()
        return not await conn.fetchval("SELECT 1 FROM outbox_events WHERE event_id = $1::uuid", event_id)


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    """The relay runs in the background for the block; stopped (and any crash surfaced) after it."""
    task = asyncio.create_task(relay.run(), name=relay.name)
    try:
        yield task
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 15)


@pytest.fixture
def new_relay(settings: Settings) -> Callable[..., OutboxRelay]:
    def build(db: Database, producer: Producer, **options: Any) -> OutboxRelay:
        name = options.pop("name", f"relay-{uuid.uuid4().hex[:6]}")
        values: dict[str, Any] = {
            "shards": settings.outbox_shards,
            "batch_size": settings.outbox_batch_size,
            "poll_interval_s": settings.outbox_poll_interval_s,
            **options,
        }
        return OutboxRelay(db, producer, RelayOptions(**values), name=name)

    return build
