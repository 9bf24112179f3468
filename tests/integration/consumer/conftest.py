"""Fixtures for the consumer runner tests: a bus of either kind, a scripted handler that writes into a
scratch effect table, a runner running in the background, and a reader of the dead-letter topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from keel.core.bus import Bus, Message, OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.consumer import ConsumerRunner
from keel.core.db import Database
from keel.core.events import Event, WireFormat, encode
from tests.integration.consumer.script import Effects
from tests.support.servers import idempotent_producers
from tests.support.topic_log import TopicLog, open_topic_log

PARTITIONS = 6


def build_bus(kind: str, request: pytest.FixtureRequest) -> Bus:
    if kind == "memory":
        return MemoryBus(PARTITIONS)
    return KafkaBus(
        request.getfixturevalue("kafka_brokers"), idempotence=idempotent_producers(), partitions=PARTITIONS
    )


def unique(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(params=["memory", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    built = build_bus(request.param, request)
    yield built
    await built.close()


@pytest_asyncio.fixture
async def memory_bus() -> AsyncIterator[MemoryBus]:
    built = MemoryBus(PARTITIONS)
    yield built
    await built.close()


@pytest_asyncio.fixture
async def effects(db: Database) -> Effects:
    return await Effects(db).create()


@contextlib.asynccontextmanager
async def running(runner: ConsumerRunner) -> AsyncIterator[asyncio.Task[None]]:
    """The runner's loop in the background; stopped (and any crash of it raised) on exit."""
    task = asyncio.create_task(runner.run(), name=runner.name)
    try:
        yield task
    finally:
        await runner.stop()
        await task


def event_record(
    topic: str,
    ident: str,
    *,
    key: str,
    wire: WireFormat = "envelope",
    event_id: str | None = None,
    **behaviour: Any,
) -> OutgoingMessage:
    """A record whose payload tells the scripted handler what to do (`fail=n`, `invalid=True`, `gate=…`)."""
    event = Event("scripted.happened", {"id": ident, **behaviour}, key=key)
    if event_id is not None:
        event = Event(event.event_type, event.payload, key, event_id)
    return encode(event, topic, wire)


class DeadLetters:
    """What reached the dead-letter topic, looked up by the original record's key."""

    def __init__(self, log: TopicLog) -> None:
        self.log = log

    async def wait_for(self, key: bytes, *, within_s: float = 20.0) -> Message:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            found = [m for m in self.log.read_so_far if m.key == key]
            if found:
                assert len(found) == 1, f"{key!r} dead-lettered {len(found)} times"
                return found[0]
            left = deadline - loop.time()
            assert left > 0, f"no dead letter with key {key!r} within {within_s}s"
            with contextlib.suppress(AssertionError):  # nothing new yet: look again until the deadline
                await self.log.read(1, within_s=min(left, 1.0))

    async def close(self) -> None:
        await self.log.close()


@contextlib.asynccontextmanager
async def dead_letters(bus: Bus, topic: str) -> AsyncIterator[DeadLetters]:
    reader = DeadLetters(await open_topic_log(bus, topic))
    try:
        yield reader
    finally:
        await reader.close()


def consumed(group: str, topic: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "events_consumed_total", {"group": group, "topic": topic, "outcome": outcome}
    )
    return value or 0.0


async def consumed_now(group: str, topic: str, outcome: str) -> float:
    """`consumed` as a probe for `eventually`."""
    return consumed(group, topic, outcome)
