"""What operator tools need from a broker beyond the bus port: offsets, reading a range, a group's
committed offsets (with their metadata) set from outside the group, and deleting a log's prefix.

Two adapters, as for the bus: Kafka through its admin API and a group-less consumer, and the memory
bus (`keel up`) through its inspection methods."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from keel.core.bus.errors import BrokerUnavailable
from keel.core.bus.kafka import KafkaBus, message_of
from keel.core.bus.memory import MemoryBus
from keel.core.bus.message import Message, TopicPartition
from keel.core.bus.port import Bus

# (offset, metadata): a committed position and the text committed beside it.
Committed = tuple[int, str]
READ_BATCH = 500
RETRY_S = 0.1
T = TypeVar("T")


class TopicAdmin(Protocol):
    async def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        """Per partition: (first offset kept, end offset); {} when the topic does not exist."""

    async def read(self, tp: TopicPartition, start: int, stop: int) -> list[Message]:
        """The records with `start <= offset < stop` still kept."""

    async def group_ids(self) -> list[str]: ...

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, Committed]: ...

    async def set_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, Committed]) -> None:
        """Commit for a group with no live member (a mark group: nobody consumes it)."""

    async def delete_before(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    async def close(self) -> None: ...


def topic_admin(bus: Bus) -> TopicAdmin:
    if isinstance(bus, KafkaBus):
        return KafkaTopicAdmin(bus)
    if isinstance(bus, MemoryBus):
        return MemoryTopicAdmin(bus)
    raise TypeError(f"no topic administration for the {bus.name!r} bus")


class MemoryTopicAdmin:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        return self._bus.partition_offsets(topic)

    async def read(self, tp: TopicPartition, start: int, stop: int) -> list[Message]:
        return self._bus.read_range(tp, start, stop)

    async def group_ids(self) -> list[str]:
        return self._bus.group_ids()

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, Committed]:
        return self._bus.group_offsets(group_id)

    async def set_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, Committed]) -> None:
        self._bus.set_group_offsets(group_id, offsets)

    async def delete_before(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._bus.delete_before(tp, offset)

    async def close(self) -> None:
        return None


class KafkaTopicAdmin:
    """The bus's admin connection, plus one consumer without a group for offsets and reads."""

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._reader: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    def _client(self, **options: Any) -> AIOKafkaConsumer:
        """A consumer of the bus's cluster that commits only when told (reads, or writes a mark)."""
        return AIOKafkaConsumer(
            bootstrap_servers=self._bus.brokers,
            client_id=f"{self._bus.client_id}-ops",
            enable_auto_commit=False,
            request_timeout_ms=int(self._bus.timeout_s * 1000),
            **self._bus.client_options,
            **options,
        )

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = self._client(group_id=None, fetch_max_wait_ms=self._bus.fetch_max_wait_ms)
            await self._bus.start_client(reader, "operator reader")
            self._reader = reader
        return self._reader

    async def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        try:
            async with asyncio.timeout(self._bus.timeout_s):
                reader = await self._consumer()
                partitions = await self._partitions(topic)
                if not partitions:
                    return {}
                tps = [KafkaTopicPartition(topic, p) for p in partitions]
                firsts = await reader.beginning_offsets(tps)
                ends = await reader.end_offsets(tps)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"offsets of {topic!r} unavailable: {exc!r}") from exc
        return {tp.partition: (firsts[tp], ends[tp]) for tp in tps}

    async def _partitions(self, topic: str) -> list[int]:
        admin = await self._bus.admin_client()
        [described] = await admin.describe_topics([topic])
        if described["error_code"] != 0:  # unknown topic: nothing was ever dead-lettered there
            return []
        return sorted(p["partition"] for p in described["partitions"])

    async def read(self, tp: TopicPartition, start: int, stop: int) -> list[Message]:
        if stop <= start:
            return []
        theirs = KafkaTopicPartition(tp.topic, tp.partition)
        records: list[Message] = []
        # One reader, one assignment at a time: concurrent reads would steal each other's partition.
        async with self._lock:
            reader = await self._consumer()
            reader.assign([theirs])
            reader.seek(theirs, start)
            try:
                async with asyncio.timeout(self._bus.timeout_s):
                    while await reader.position(theirs) < stop:
                        batch = await reader.getmany(theirs, timeout_ms=500, max_records=READ_BATCH)
                        records += [message_of(r) for r in batch.get(theirs, ()) if r.offset < stop]
            except (TimeoutError, KafkaError, OSError) as exc:
                raise BrokerUnavailable(f"cannot read {tp.topic}[{tp.partition}]: {exc!r}") from exc
        return records

    async def group_ids(self) -> list[str]:
        admin = await self._bus.admin_client()
        listed = await admin.list_consumer_groups()
        return sorted(str(g[0]) for g in listed)

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, Committed]:
        admin = await self._bus.admin_client()
        found = await self._retrying(lambda: admin.list_consumer_group_offsets(group_id), group_id)
        return {
            TopicPartition(tp.topic, tp.partition): (om.offset, om.metadata or "")
            for tp, om in found.items()
            if om.offset >= 0
        }

    async def set_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, Committed]) -> None:
        # A consumer of the group with partitions assigned by hand commits without joining: Kafka takes
        # such commits from a group that has no live member, which a mark group never has.
        committer = self._client(group_id=group_id)
        await self._bus.start_client(committer, f"mark of group {group_id!r}")
        try:
            theirs = {KafkaTopicPartition(tp.topic, tp.partition): om for tp, om in offsets.items()}
            committer.assign(list(theirs))
            async with asyncio.timeout(self._bus.timeout_s):
                await committer.commit({tp: OffsetAndMetadata(o, m) for tp, (o, m) in theirs.items()})
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot commit the mark of group {group_id!r}: {exc!r}") from exc
        finally:
            await committer.stop()

    async def delete_before(self, offsets: Mapping[TopicPartition, int]) -> None:
        admin = await self._bus.admin_client()
        await admin.delete_records(
            {KafkaTopicPartition(tp.topic, tp.partition): RecordsToDelete(o) for tp, o in offsets.items()}
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """A retriable error (no group coordinator yet on a fresh cluster) is retried within the timeout."""
        try:
            async with asyncio.timeout(self._bus.timeout_s):
                while True:
                    try:
                        return await call()
                    except KafkaError as exc:
                        if not exc.retriable:
                            raise
                    await asyncio.sleep(RETRY_S)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"offsets of group {what!r} unavailable: {exc!r}") from exc

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
