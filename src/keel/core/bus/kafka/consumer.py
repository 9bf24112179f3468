"""KafkaConsumer: a group member with manual commits behind the bus port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError

from keel.core.bus.errors import BrokerUnavailable, CommitFailed, ConsumerStopped, NotAssigned
from keel.core.bus.kafka.failures import UNREACHABLE
from keel.core.bus.message import Message, TopicPartition
from keel.core.bus.port import RebalanceListener

if TYPE_CHECKING:
    from keel.core.bus.kafka.bus import KafkaBus


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, on_assign: RebalanceListener | None, on_revoke: RebalanceListener | None) -> None:
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        # aiokafka also calls this, empty, before the first join; the port only reports real losses.
        if revoked and self._on_revoke is not None:
            await self._on_revoke(_ours(revoked))

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        if self._on_assign is not None:
            await self._on_assign(_ours(assigned))


def _ours(partitions: set[KafkaTopicPartition]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


def _theirs(tp: TopicPartition) -> KafkaTopicPartition:
    # aiokafka checks isinstance against its own TopicPartition, so ours must be converted.
    return KafkaTopicPartition(tp.topic, tp.partition)


def message_of(record: ConsumerRecord[bytes, bytes]) -> Message:
    """An aiokafka record as the bus's Message."""
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
        timestamp_ms=record.timestamp,
    )


class KafkaConsumer:
    """A group member with manual commits that starts from the earliest offset when none is committed."""

    def __init__(
        self,
        bus: KafkaBus,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None,
        on_revoke: RebalanceListener | None,
    ) -> None:
        self._bus = bus
        self.topics = list(dict.fromkeys(topics))
        self.group_id = group_id
        self._listener = _ListenerBridge(on_assign, on_revoke)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        bus = self._bus
        await bus.ensure_topics(self.topics)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.brokers,
            client_id=bus.client_id,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=bus.session_timeout_ms,
            heartbeat_interval_ms=bus.heartbeat_interval_ms,
            request_timeout_ms=int(bus.timeout_s * 1000),
            fetch_max_wait_ms=bus.fetch_max_wait_ms,
            **bus.client_options,
        )
        consumer.subscribe(self.topics, listener=self._listener)
        # start() returns once the group has given this member its first assignment.
        await bus.start_client(consumer, f"consumer of group {self.group_id!r}")
        self._consumer = consumer
        bus.track(self, live=True)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._bus.track(self, live=False)
        if consumer is not None:
            await consumer.stop()

    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ConsumerStopped(f"consumer of group {self.group_id!r} is stopped")
        return self._consumer

    async def getmany(self, timeout_s: float, max_records: int) -> list[Message]:
        consumer = self._running()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except ConsumerStoppedError as exc:
            raise ConsumerStopped(f"consumer of group {self.group_id!r} stopped while reading") from exc
        return [message_of(record) for records in batches.values() for record in records]

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            raise CommitFailed(f"consumer of group {self.group_id!r} is stopped and owns no partition")
        if not offsets:
            return
        try:
            # aiokafka retries retriable errors forever (e.g. no coordinator while the broker is down).
            async with asyncio.timeout(self._bus.timeout_s):
                await consumer.commit({_theirs(tp): offset for tp, offset in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitFailed(f"group {self.group_id!r} has rebalanced: {exc}") from exc
        except UNREACHABLE as exc:
            raise BrokerUnavailable(f"commit for group {self.group_id!r} failed: {exc!r}") from exc

    def assignment(self) -> set[TopicPartition]:
        consumer = self._consumer
        return _ours(consumer.assignment()) if consumer is not None else set()

    def pause(self, partitions: set[TopicPartition]) -> None:
        # Partitions not (or no longer) owned are skipped: a rebalance may have taken them meanwhile.
        if self._consumer is not None:
            owned = self._consumer.assignment()
            self._consumer.pause(*(_theirs(tp) for tp in partitions if tp in owned))

    def resume(self, partitions: set[TopicPartition]) -> None:
        if self._consumer is not None:
            owned = self._consumer.assignment()
            self._consumer.resume(*(_theirs(tp) for tp in partitions if tp in owned))

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._running().seek(_theirs(tp), offset)
        except IllegalStateError as exc:
            raise NotAssigned(f"{tp} is not assigned to this consumer") from exc

    async def lag(self) -> dict[TopicPartition, int]:
        consumer = self._running()
        owned = list(consumer.assignment())
        if not owned:
            return {}
        lags: dict[TopicPartition, int] = {}
        try:
            async with asyncio.timeout(self._bus.timeout_s):
                ends = await consumer.end_offsets(owned)
                for tp in owned:
                    # A rebalance may take partitions away while this awaits: skip those.
                    if tp not in consumer.assignment():
                        continue
                    end = _log_end(ends[tp], consumer.highwater(tp))
                    with contextlib.suppress(IllegalStateError):
                        lags[TopicPartition(tp.topic, tp.partition)] = max(
                            0, end - await consumer.position(tp)
                        )
        except UNREACHABLE as exc:
            raise BrokerUnavailable(f"lag of group {self.group_id!r} unavailable: {exc!r}") from exc
        return lags


def _log_end(listed: int, highwater: int | None) -> int:
    """The end of a partition's log: the broker's ListOffsets answer, or the last fetch's highwater.

    Kafka's ListOffsets is exact and the highwater can only trail it. Tansu (the test broker) answers
    ListOffsets with the last batch's base offset + 1, so the highwater is the better figure there."""
    return max(listed, highwater or 0)
