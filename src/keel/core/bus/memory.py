"""In-process broker with Kafka's semantics: the embedded default under `keel up` and in fast tests.

Same contract as the Kafka adapter (proven by tests/contract/test_bus_contract.py): keyed records go to
murmur2(key) % N like Kafka's default partitioner, a consumer group shares partitions among its live
members with eager rebalances (every member gives up all partitions, then gets its new share), and a
member reads from the group's committed offset, so anything not committed is delivered again.

Retention: `keel up` runs for days on this bus, so each partition keeps its last `retain` records
(a broker's size-based retention) and, beyond them, only what some group reading its topic has not
committed yet: nothing a group still needs is dropped. A position below the first record kept reads
from there, like Kafka's `auto.offset.reset=earliest`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence

from keel.core.bus.errors import BrokerUnavailable, BusError, CommitFailed, ConsumerStopped, NotAssigned
from keel.core.bus.message import Message, OutgoingMessage, TopicPartition
from keel.core.bus.partitioner import partition_of
from keel.core.bus.port import RebalanceListener
from keel.core.spans import start_sending

log = logging.getLogger(__name__)

TRIM_CHUNK = 1024


def partition_for(key: bytes | None, partitions: int, counter: itertools.count[int]) -> int:
    """Kafka's default partitioner: murmur2 of the key for keyed records, spread otherwise."""
    if key is None:
        return next(counter) % partitions
    return partition_of(key, partitions)


class _Log:
    """One partition: the records kept, and the offset of the first of them."""

    __slots__ = ("base", "records")

    def __init__(self) -> None:
        self.base = 0
        self.records: list[Message] = []

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def read(self, position: int, limit: int) -> list[Message]:
        start = max(position, self.base) - self.base
        return self.records[start : start + limit]

    def trim(self, below: int) -> None:
        """Forget the records before offset `below`."""
        drop = min(below, self.end) - self.base
        if drop > 0:
            del self.records[:drop]
            self.base += drop


class _Topic:
    __slots__ = ("_keyless", "logs", "name")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.logs: list[_Log] = [_Log() for _ in range(partitions)]
        self._keyless = itertools.count()

    def append(self, record: OutgoingMessage) -> Message:
        partition = partition_for(record.key, len(self.logs), self._keyless)
        log_ = self.logs[partition]
        # The payload bytes are shared, not copied: every group reads the same immutable Message.
        message = Message(
            topic=record.topic,
            partition=partition,
            offset=log_.end,
            key=record.key,
            value=record.value,
            headers=record.headers,
            timestamp_ms=time.time_ns() // 1_000_000,
        )
        log_.records.append(message)
        return message


class _Group:
    __slots__ = ("committed", "lock", "members", "metadata", "topics")

    def __init__(self) -> None:
        self.members: list[MemoryConsumer] = []
        self.committed: dict[TopicPartition, int] = {}
        self.metadata: dict[TopicPartition, str] = {}  # a commit's metadata string, as Kafka keeps it
        self.topics: set[str] = set()  # every topic a member ever read: the group pins their records
        # Joins and leaves are serialised: a rebalance awaits listeners and must not interleave.
        self.lock = asyncio.Lock()


class MemoryBus:
    """One broker per process (or per test); nothing is persisted."""

    name = "memory"

    def __init__(self, partitions: int = 6, *, retain: int = 1000) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        if retain < 0:
            raise ValueError("retain must be >= 0")
        self._partitions = partitions
        self._retain = retain
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._readers: dict[str, set[MemoryConsumer]] = {}
        self._closed = False

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None = None,
        on_revoke: RebalanceListener | None = None,
    ) -> MemoryConsumer:
        return MemoryConsumer(self, topics, group_id, on_assign=on_assign, on_revoke=on_revoke)

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        self.check_open()
        for name in topics:
            self.topic(name, partitions)

    async def ping(self) -> None:
        self.check_open()

    async def refusal(self) -> str | None:
        return None

    async def close(self) -> None:
        live = {m for group in self._groups.values() for m in group.members}
        for member in live:
            await member.stop()
        self._closed = True

    # --- inspection, for operator tools (keel.ops) that Kafka serves through its admin API ---

    def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        """Per partition: the first offset kept and the end offset (empty for an unknown topic)."""
        found = self._topics.get(topic)
        return {} if found is None else {n: (log_.base, log_.end) for n, log_ in enumerate(found.logs)}

    def read_range(self, tp: TopicPartition, start: int, stop: int) -> list[Message]:
        """The records kept with `start <= offset < stop`."""
        return self.log(tp).read(start, max(0, stop - start))

    def group_ids(self) -> list[str]:
        return sorted(self._groups)

    def group_offsets(self, group_id: str) -> dict[TopicPartition, tuple[int, str]]:
        group = self._groups.get(group_id)
        if group is None:
            return {}
        return {tp: (offset, group.metadata.get(tp, "")) for tp, offset in group.committed.items()}

    def set_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, tuple[int, str]]) -> None:
        """Commit for a group that has no member (Kafka allows it for an empty group)."""
        group = self._groups.setdefault(group_id, _Group())
        if group.members:
            raise CommitFailed(f"group {group_id!r} has live members; its offsets are theirs to commit")
        for tp, (offset, metadata) in offsets.items():
            group.committed[tp] = offset
            group.metadata[tp] = metadata

    def delete_before(self, tp: TopicPartition, offset: int) -> None:
        """Kafka's DeleteRecords: forget the partition's records before `offset`."""
        self.log(tp).trim(offset)

    # --- used by the producer and consumers of this bus ---

    def check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the memory bus is closed")

    def topic(self, name: str, partitions: int | None = None) -> _Topic:
        """The topic, created on first use like a broker with auto-creation on."""
        found = self._topics.get(name)
        if found is None:
            found = self._topics[name] = _Topic(name, partitions or self._partitions)
        return found

    def log(self, tp: TopicPartition) -> _Log:
        return self._topics[tp.topic].logs[tp.partition]

    def append(self, record: OutgoingMessage) -> Message:
        self.check_open()
        message = self.topic(record.topic).append(record)
        tp = message.tp
        for reader in self._readers.get(record.topic, ()):
            reader.notify(tp)
        self._retire(tp)
        return message

    def commit(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._groups[group_id].committed.update(offsets)
        for tp in offsets:
            self._retire(tp)

    def _retire(self, tp: TopicPartition) -> None:
        """Drop what is beyond the last `retain` records and committed by every group reading the
        topic; checked once the log holds a chunk more than `retain` (deleting a list's head is O(n))."""
        log_ = self.log(tp)
        if len(log_.records) < self._retain + TRIM_CHUNK:
            return
        needed = min(
            (g.committed.get(tp, 0) for g in self._groups.values() if tp.topic in g.topics),
            default=log_.end,
        )
        log_.trim(min(needed, log_.end - self._retain))

    async def join(self, member: MemoryConsumer) -> None:
        group = self._groups.setdefault(member.group_id, _Group())
        async with group.lock:
            group.members.append(member)
            group.topics.update(member.topics)
            for name in member.topics:
                self._readers.setdefault(name, set()).add(member)
            await self._rebalance(group)

    async def leave(self, member: MemoryConsumer) -> None:
        group = self._groups[member.group_id]
        async with group.lock:
            group.members.remove(member)
            for name in member.topics:
                self._readers[name].discard(member)
            # Like aiokafka's close(): the leaving member gets no on_revoke, it just lets go.
            member.take_assignment(set(), group.committed)
            await self._rebalance(group)

    async def _rebalance(self, group: _Group) -> None:
        for member in group.members:
            owned = member.assignment()
            if owned:
                # Called while the member still owns them, so a listener may commit its progress.
                await member.fire(member.on_revoke, owned)
                member.take_assignment(set(), group.committed)
        plan = self._plan(group.members)
        for member in group.members:
            member.take_assignment(plan[member], group.committed)
        for member in group.members:
            await member.fire(member.on_assign, plan[member])

    def _plan(self, members: Sequence[MemoryConsumer]) -> dict[MemoryConsumer, set[TopicPartition]]:
        """Each topic's partitions dealt round-robin to the members subscribed to it, in join order."""
        plan: dict[MemoryConsumer, set[TopicPartition]] = {m: set() for m in members}
        for name in sorted({t for m in members for t in m.topics}):
            subscribers = [m for m in members if name in m.topics]
            for partition in range(len(self._topics[name].logs)):
                plan[subscribers[partition % len(subscribers)]].add(TopicPartition(name, partition))
        return plan


class MemoryProducer:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self._running = False

    async def start(self) -> None:
        self._bus.check_open()
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def send(self, message: OutgoingMessage) -> None:
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if not self._running:
            raise BusError("producer is not started")
        sending = start_sending(messages)
        if sending is not None:
            messages = sending.messages
        appended = [self._bus.append(message) for message in messages]
        if sending is not None:
            sending.acked([(m.partition, m.offset) for m in appended])
        # A real send always yields to the loop; so does this one, or a tight send loop starves readers.
        await asyncio.sleep(0)


class MemoryConsumer:
    def __init__(
        self,
        bus: MemoryBus,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None,
        on_revoke: RebalanceListener | None,
    ) -> None:
        self._bus = bus
        self.topics = tuple(dict.fromkeys(topics))
        self.group_id = group_id
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._wakeup = asyncio.Event()
        self._running = False
        self._rotation = 0

    async def start(self) -> None:
        if self._running:
            return
        await self._bus.ensure_topics(self.topics)
        self._running = True
        await self._bus.join(self)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._wakeup.set()
        await self._bus.leave(self)

    async def getmany(self, timeout_s: float, max_records: int) -> list[Message]:
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if not self._running:
                raise ConsumerStopped(f"consumer of group {self.group_id!r} is stopped")
            batch = self._take(max_records)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            # No await between the empty read and clear(): an append cannot slip in unseen.
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return self._take(max_records) if self._running else []

    def _take(self, max_records: int) -> list[Message]:
        readable = sorted(self._assigned - self._paused)
        if not readable:
            return []
        # Start each read at the next partition, so one busy partition cannot starve the rest.
        self._rotation = (self._rotation + 1) % len(readable)
        batch: list[Message] = []
        for tp in readable[self._rotation :] + readable[: self._rotation]:
            chunk = self._bus.log(tp).read(self._positions[tp], max_records - len(batch))
            if chunk:
                batch.extend(chunk)
                self._positions[tp] = chunk[-1].offset + 1
                if len(batch) >= max_records:
                    break
        return batch

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        lost = sorted(tp for tp in offsets if not self._running or tp not in self._assigned)
        if lost:
            raise CommitFailed(f"group {self.group_id!r} has rebalanced: {lost} no longer owned here")
        if any(offset < 0 for offset in offsets.values()):
            raise ValueError("offsets must be >= 0")
        self._bus.commit(self.group_id, offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, partitions: set[TopicPartition]) -> None:
        # Partitions not (or no longer) owned are skipped: a rebalance may have taken them meanwhile.
        self._paused |= partitions & self._assigned

    def resume(self, partitions: set[TopicPartition]) -> None:
        self._paused -= partitions
        self._wakeup.set()

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._assigned:
            raise NotAssigned(f"{tp} is not assigned to this consumer")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        self._positions[tp] = offset
        self._wakeup.set()

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: max(0, self._bus.log(tp).end - self._positions[tp]) for tp in self._assigned}

    # --- called by the bus ---

    def notify(self, tp: TopicPartition) -> None:
        if tp in self._assigned:
            self._wakeup.set()

    def take_assignment(
        self, partitions: set[TopicPartition], committed: Mapping[TopicPartition, int]
    ) -> None:
        """Own exactly `partitions`, reading each from the group's committed offset (earliest if none).

        Pauses do not survive a rebalance, as in aiokafka, where a new assignment starts unpaused."""
        self._assigned = set(partitions)
        self._positions = {tp: committed.get(tp, 0) for tp in partitions}
        self._paused.clear()
        self._wakeup.set()

    async def fire(self, listener: RebalanceListener | None, partitions: Iterable[TopicPartition]) -> None:
        if listener is None:
            return
        try:
            await listener(set(partitions))
        except Exception:
            # aiokafka logs and carries on when a listener fails; do the same so both behave alike.
            log.exception("rebalance listener of group %r failed", self.group_id)
