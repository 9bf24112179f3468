"""Read back everything on a topic, from the start, to check what a producer really published.

Kafka: a group-less consumer assigned every partition (no group join to wait for). Memory: a
consumer of the memory bus in a group of its own. `size()` counts the records on the topic now,
so a test can prove there is nothing beyond what it read.

Apache Kafka's ListOffsets is exact: the unread count is each partition's end offset minus the
reader's position. Tansu's is wrong after batched produces (the latest offset of a partition holding
12 records from one batch came back as 1), so there alone the reader finds the end of each partition
by writing an end marker to it and reading up to the marker instead.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition

from keel.core.bus import Bus, Message
from keel.core.bus.kafka import KafkaBus
from keel.core.events import Event, WireFormat, decode
from tests.support import servers


class TopicLog(abc.ABC):
    def __init__(self) -> None:
        self.read_so_far: list[Message] = []

    @abc.abstractmethod
    async def _fetch(self, timeout_s: float, max_records: int) -> list[Message]: ...

    @abc.abstractmethod
    async def _unread(self) -> int: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def read(self, count: int, *, within_s: float = 20.0) -> list[Message]:
        """The next `count` records (never more), or fail saying how many came before the deadline."""
        got: list[Message] = []
        deadline = time.monotonic() + within_s
        while len(got) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"read {len(got)} of {count} records within {within_s}s"
            got += await self._fetch(min(left, 0.5), count - len(got))
        self.read_so_far += got
        return got

    async def size(self) -> int:
        """Records on the topic now: those read plus those not read yet."""
        return len(self.read_so_far) + await self._unread()


MARKER = "topic-log-end-marker"


class KafkaTopicLog(TopicLog):
    def __init__(self, brokers: list[str], topic: str) -> None:
        super().__init__()
        self.topic = topic
        self._brokers = brokers
        self._extra: list[Message] = []
        self._consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
        self._partitions: list[KafkaTopicPartition] = []

    async def open(self) -> KafkaTopicLog:
        await self._consumer.start()
        # The consumer's own metadata holds only subscribed topics: ask the cluster for every topic.
        cluster = await self._consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(self.topic)
        assert partitions, f"topic {self.topic} does not exist"
        self._partitions = [KafkaTopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return self

    async def _fetch(self, timeout_s: float, max_records: int) -> list[Message]:
        if self._extra:
            taken, self._extra = self._extra[:max_records], self._extra[max_records:]
            return taken
        return [m for m in await self._fetch_raw(timeout_s, max_records) if m.header(MARKER) is None]

    async def _fetch_raw(self, timeout_s: float, max_records: int) -> list[Message]:
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Message(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp)
            for records in batches.values()
            for r in records
        ]

    async def _unread(self) -> int:
        if servers.broker_kind() == "tansu":
            return await self._unread_by_markers()
        ends = await self._consumer.end_offsets(self._partitions)
        behind = [ends[tp] - await self._consumer.position(tp) for tp in self._partitions]
        return len(self._extra) + sum(behind)

    async def _unread_by_markers(self) -> int:
        token = uuid.uuid4().hex.encode()
        producer = AIOKafkaProducer(bootstrap_servers=self._brokers, acks="all")
        await producer.start()
        try:
            for tp in self._partitions:
                await producer.send_and_wait(
                    self.topic, b"", partition=tp.partition, headers=[(MARKER, token)]
                )
        finally:
            await producer.stop()
        waiting = {tp.partition for tp in self._partitions}
        deadline = time.monotonic() + 20
        while waiting:
            assert time.monotonic() < deadline, f"end markers of partitions {waiting} not read back"
            for message in await self._fetch_raw(0.5, 10_000):
                if message.header(MARKER) == token:
                    waiting.discard(message.partition)
                elif message.header(MARKER) is None:
                    self._extra.append(message)
        return len(self._extra)

    async def close(self) -> None:
        await self._consumer.stop()


class BusTopicLog(TopicLog):
    def __init__(self, bus: Bus, topic: str) -> None:
        super().__init__()
        self._consumer = bus.consumer([topic], f"reader-{uuid.uuid4().hex[:8]}")

    async def open(self) -> BusTopicLog:
        await self._consumer.start()
        return self

    async def _fetch(self, timeout_s: float, max_records: int) -> list[Message]:
        return await self._consumer.getmany(timeout_s, max_records)

    async def _unread(self) -> int:
        return sum((await self._consumer.lag()).values())

    async def close(self) -> None:
        await self._consumer.stop()


async def open_topic_log(bus: Bus, topic: str) -> TopicLog:
    """A reader of `topic` from its first record; the topic is created if missing."""
    await bus.ensure_topics([topic])
    if isinstance(bus, KafkaBus):
        return await KafkaTopicLog(bus.brokers, topic).open()
    return await BusTopicLog(bus, topic).open()


async def published_events(
    brokers: list[str], topics: Sequence[str], keep: Callable[[Event], bool], wire: WireFormat = "bare"
) -> list[tuple[str, Event]]:
    """(topic, event) for each event the relay published on `topics` that `keep` accepts, once per
    event id: the relay publishes at least once, and a batch sent again after a crash repeats its ids.
    What services emitted, once the outbox has no row of it left (the relay deletes a row after the
    broker's ack). A bare record without an `event-id` header did not come from a relay (a test's
    copy as an outside producer sends it) and is left out."""
    seen: dict[str, tuple[str, Event]] = {}
    for topic in topics:
        log = await KafkaTopicLog(brokers, topic).open()
        try:
            records = await log.read(await log.size())
        finally:
            await log.close()
        for record in records:
            if wire == "bare" and record.header("event-id") is None:
                continue
            event = decode(record, wire)
            if keep(event):
                seen.setdefault(event.event_id, (topic, event))
    return list(seen.values())
