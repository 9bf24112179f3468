"""Helpers for bus tests: read with a deadline, Kafka's own partitioner as the oracle, and a producer
that records what it was handed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from aiokafka.partitioner import DefaultPartitioner

from keel.core.bus import Bus, Consumer, Message, OutgoingMessage, Producer
from keel.core.bus.kafka import KafkaBus
from tests.support.servers import idempotent_producers


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) picks for `key`."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def keys_on_distinct_partitions(count: int, partitions: int, prefix: str = "key") -> list[bytes]:
    """`count` keys that Kafka's partitioner puts on `count` different partitions."""
    chosen: dict[int, bytes] = {}
    n = 0
    while len(chosen) < count:
        key = f"{prefix}-{n}".encode()
        chosen.setdefault(kafka_partition(key, partitions), key)
        n += 1
    return list(chosen.values())


async def read(consumer: Consumer, count: int, *, within_s: float = 15.0) -> list[Message]:
    """Exactly `count` records (never more), or fail saying how many came before the deadline."""
    got: list[Message] = []
    deadline = time.monotonic() + within_s
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"read {len(got)} of {count} records within {within_s}s"
        got += await consumer.getmany(timeout_s=min(left, 0.5), max_records=count - len(got))
    return got


@contextlib.asynccontextmanager
async def started_producer(bus: Bus) -> AsyncIterator[Producer]:
    producer = bus.producer()
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def kafka_producer(brokers: list[str]) -> AsyncIterator[Producer]:
    """A started producer on its own KafkaBus (no idempotence: tests produce as an outside client)."""
    bus = KafkaBus(brokers, idempotence=idempotent_producers())
    try:
        async with started_producer(bus) as producer:
            yield producer
    finally:
        await bus.close()


class Recording:
    """A producer that passes every call on and records each `send_many` once it came back
    acknowledged: `(time.time() then, the records)`. What a relay hands over, batch by batch."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.acked: list[tuple[float, Sequence[OutgoingMessage]]] = []

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, message: OutgoingMessage) -> None:
        await self.send_many([message])

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        await self._producer.send_many(messages)
        self.acked.append((time.time(), messages))
