"""Details of the in-process bus beyond the shared contract: ownership checks, wake-ups, rebalances."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from keel.core.bus import Message, OutgoingMessage, Producer, RebalanceListener, TopicPartition
from keel.core.bus.errors import BrokerUnavailable, CommitFailed, ConsumerStopped, NotAssigned
from keel.core.bus.memory import TRIM_CHUNK, MemoryBus, MemoryConsumer
from tests.support.bus import kafka_partition, keys_on_distinct_partitions, read


@pytest_asyncio.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    built = MemoryBus(partitions=2)
    yield built
    await built.close()


@pytest_asyncio.fixture
async def producer(bus: MemoryBus) -> Producer:
    started = bus.producer()
    await started.start()
    return started


async def started(
    bus: MemoryBus, *, on_assign: RebalanceListener | None = None, on_revoke: RebalanceListener | None = None
) -> MemoryConsumer:
    consumer = bus.consumer(["t"], "g", on_assign=on_assign, on_revoke=on_revoke)
    await consumer.start()
    return consumer


def partition_key(index: int) -> bytes:
    """A key that Kafka's partitioner puts on partition `index` of two."""
    return next(k for k in keys_on_distinct_partitions(2, 2) if kafka_partition(k, 2) == index)


async def test_commit_by_a_member_that_lost_the_partition_raises_commit_failed(
    bus: MemoryBus, producer: Producer
) -> None:
    first = await started(bus)
    await producer.send(OutgoingMessage("t", b"v", key=partition_key(1)))
    [message] = await read(first, 1)

    second = await started(bus)  # round-robin over join order: partition 1 moves to `second`

    assert message.tp in second.assignment()
    with pytest.raises(CommitFailed):
        await first.commit({message.tp: message.offset + 1})
    [again] = await read(second, 1)
    assert (again.tp, again.offset) == (message.tp, message.offset)


async def test_commit_after_stop_raises_commit_failed(bus: MemoryBus, producer: Producer) -> None:
    consumer = await started(bus)
    await producer.send(OutgoingMessage("t", b"v", key=b"k"))
    [message] = await read(consumer, 1)
    await consumer.stop()

    with pytest.raises(CommitFailed):
        await consumer.commit({message.tp: message.offset + 1})


async def test_getmany_sleeps_until_a_record_arrives_instead_of_polling(
    bus: MemoryBus, producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = await started(bus)
    reads = 0
    take: Callable[[int], list[Message]] = consumer._take

    def counted(max_records: int) -> list[Message]:
        nonlocal reads
        reads += 1
        return take(max_records)

    monkeypatch.setattr(consumer, "_take", counted)
    waiting = asyncio.create_task(consumer.getmany(timeout_s=30, max_records=10))
    for _ in range(100):  # let the loop run; a polling reader would look again on each turn
        await asyncio.sleep(0)
    assert (waiting.done(), reads) == (False, 1)

    started_at = time.monotonic()
    await producer.send(OutgoingMessage("t", b"wake", key=b"k"))
    batch = await asyncio.wait_for(waiting, 1)

    assert [m.value for m in batch] == [b"wake"]
    assert reads == 2
    assert time.monotonic() - started_at < 0.5


async def test_getmany_returns_nothing_once_the_timeout_passes(bus: MemoryBus) -> None:
    consumer = await started(bus)
    started_at = time.monotonic()

    assert await consumer.getmany(timeout_s=0.05, max_records=10) == []
    assert time.monotonic() - started_at >= 0.05


async def test_stop_wakes_a_waiting_getmany_with_consumer_stopped(bus: MemoryBus) -> None:
    consumer = await started(bus)
    waiting = asyncio.create_task(consumer.getmany(timeout_s=30, max_records=10))
    await asyncio.sleep(0)

    await consumer.stop()

    with pytest.raises(ConsumerStopped):
        await asyncio.wait_for(waiting, 1)


async def test_rebalance_rewinds_kept_partitions_to_the_committed_offset(
    bus: MemoryBus, producer: Producer
) -> None:
    # Eager rebalancing, as aiokafka does: even a partition that stays is re-read from the commit.
    first = await started(bus)
    kept = TopicPartition("t", 0)
    await producer.send_many([OutgoingMessage("t", str(i).encode(), key=partition_key(0)) for i in range(3)])
    await read(first, 3)
    await first.commit({kept: 1})

    await started(bus)

    assert kept in first.assignment()
    assert [m.offset for m in await read(first, 2)] == [1, 2]


async def test_rebalance_clears_pauses_like_a_fresh_kafka_assignment(
    bus: MemoryBus, producer: Producer
) -> None:
    first = await started(bus)
    first.pause({TopicPartition("t", 0)})

    await started(bus)
    await producer.send(OutgoingMessage("t", b"v", key=partition_key(0)))

    assert [m.value for m in await read(first, 1)] == [b"v"]


async def test_a_failing_listener_is_logged_and_the_rebalance_completes(
    bus: MemoryBus, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(partitions: set[TopicPartition]) -> None:
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.ERROR, logger="keel.core.bus.memory"):
        consumer = await started(bus, on_assign=broken)

    assert consumer.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
    assert "rebalance listener" in caplog.text


async def test_leaving_member_hands_its_partitions_to_the_rest_without_on_revoke(bus: MemoryBus) -> None:
    revoked: list[set[TopicPartition]] = []

    async def on_revoke(partitions: set[TopicPartition]) -> None:
        revoked.append(partitions)

    first = await started(bus)
    second = await started(bus, on_revoke=on_revoke)
    revoked.clear()

    await first.stop()

    assert second.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
    assert revoked == [{TopicPartition("t", 1)}]  # second's own share, given back before the new deal


async def test_seek_on_a_partition_not_owned_raises_not_assigned(bus: MemoryBus) -> None:
    consumer = await started(bus)

    with pytest.raises(NotAssigned):
        await consumer.seek(TopicPartition("other", 0), 0)


async def test_keyless_records_are_spread_over_all_partitions(bus: MemoryBus, producer: Producer) -> None:
    consumer = await started(bus)
    await producer.send_many([OutgoingMessage("t", b"v") for _ in range(4)])

    got = await read(consumer, 4)

    assert sorted(m.partition for m in got) == [0, 0, 1, 1]


async def test_closed_bus_refuses_sends_and_pings(bus: MemoryBus, producer: Producer) -> None:
    consumer = await started(bus)

    await bus.close()

    with pytest.raises(BrokerUnavailable):
        await bus.ping()
    with pytest.raises(BrokerUnavailable):
        await producer.send(OutgoingMessage("t", b"v"))
    with pytest.raises(ConsumerStopped):
        await consumer.getmany(timeout_s=0, max_records=1)


async def test_a_partition_keeps_its_last_records_and_what_some_group_has_not_committed():
    bus = MemoryBus(partitions=1, retain=1000)
    producer = bus.producer()
    await producer.start()
    tp = TopicPartition("t", 0)
    fast = bus.consumer(["t"], "fast")
    slow = bus.consumer(["t"], "slow")
    await fast.start()
    await slow.start()
    await producer.send_many([OutgoingMessage("t", b"%d" % i) for i in range(5000)])
    await fast.commit({tp: 5000})
    assert bus.log(tp).base == 0, "the slow group has committed nothing: every record is kept"
    await slow.commit({tp: 2500})
    assert bus.log(tp).base == 2500
    await slow.commit({tp: 5000})
    assert bus.log(tp).base == 4000, "the last 1,000 stay for a rewind"
    await slow.stop()
    # A group that left still pins what it has not committed; a member rejoining reads from there.
    await producer.send_many([OutgoingMessage("t", b"%d" % i) for i in range(5000, 7100)])
    assert bus.log(tp).base == 5000
    again = bus.consumer(["t"], "slow")
    await again.start()
    batch = await again.getmany(timeout_s=1, max_records=10)
    assert [m.offset for m in batch] == list(range(5000, 5010))
    await again.stop()
    await fast.stop()
    await bus.close()


async def test_a_topic_no_group_reads_keeps_its_last_records_only():
    bus = MemoryBus(partitions=1, retain=2000)
    producer = bus.producer()
    await producer.start()
    await producer.send_many([OutgoingMessage("audit", b"x") for _ in range(10_000)])
    log_ = bus.log(TopicPartition("audit", 0))
    assert log_.end == 10_000
    assert 2000 <= len(log_.records) < 2000 + TRIM_CHUNK
    # A reader arriving later starts at the oldest record kept (auto.offset.reset=earliest).
    late = bus.consumer(["audit"], "late")
    await late.start()
    first = await late.getmany(timeout_s=1, max_records=1)
    assert first[0].offset == log_.base
    await late.stop()
    await bus.close()
