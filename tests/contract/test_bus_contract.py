"""One contract for both bus adapters (memory, and Kafka against the real test broker).

A consumer-group join costs seconds on the broker, so consumers are shared where a test only reads:
`readers` starts one consumer per reading test, each in its own group on its own topic, all joining
at once; `pair` is one two-member group whose rebalance several tests inspect.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from keel.core.bus import Bus, Consumer, OutgoingMessage, Producer, TopicPartition
from keel.core.bus.errors import CommitFailed
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from tests.support.bus import kafka_partition, keys_on_distinct_partitions, read
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers

PARTITIONS = 6
# Reading tests and the topic each reads; two groups share the fan-out topic.
READERS = {
    "roundtrip": "roundtrip",
    "order": "order",
    "keyless": "keyless",
    "send_many": "send-many",
    "seek": "seek",
    "pause": "pause",
    "lag": "lag",
    "fanout_a": "fanout",
    "fanout_b": "fanout",
}


def unique(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:8]}"


def kafka_bus(brokers: list[str]) -> KafkaBus:
    # The test broker's group join takes about half the session timeout and a rejoin after a member
    # left about a session timeout more: 3 s keeps them near 2 s and 7 s (10 s: 5 s and 16 s).
    return KafkaBus(
        brokers, idempotence=idempotent_producers(), session_timeout_ms=3_000, heartbeat_interval_ms=300
    )


@pytest_asyncio.fixture(scope="module", params=["memory", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    built: Bus = (
        MemoryBus(PARTITIONS)
        if request.param == "memory"
        else kafka_bus(request.getfixturevalue("kafka_brokers"))
    )
    yield built
    await built.close()


@pytest_asyncio.fixture(scope="module")
async def twin(bus: Bus) -> AsyncIterator[Bus]:
    """A second handle on the same broker (a new client for Kafka; the same bus in memory)."""
    if isinstance(bus, KafkaBus):
        other = kafka_bus(bus.brokers)
        yield other
        await other.close()
    else:
        yield bus


@pytest_asyncio.fixture(scope="module")
async def producer(bus: Bus) -> AsyncIterator[Producer]:
    started = bus.producer()
    await started.start()
    yield started
    await started.stop()


@dataclass
class Reader:
    topic: str
    consumer: Consumer


@pytest_asyncio.fixture(scope="module")
async def readers(bus: Bus) -> AsyncIterator[dict[str, Reader]]:
    topics = {base: unique(base) for base in set(READERS.values())}
    made = {
        name: Reader(topics[base], bus.consumer([topics[base]], unique(name)))
        for name, base in READERS.items()
    }
    await asyncio.gather(*(r.consumer.start() for r in made.values()))
    yield made
    await asyncio.gather(*(r.consumer.stop() for r in made.values()))


@dataclass
class Pair:
    """Two members of one group; `first` joined alone, then `second` joined and split the partitions."""

    topic: str
    first: Consumer
    second: Consumer
    events: list[tuple[str, str, frozenset[TopicPartition]]] = field(default_factory=list)

    def last(self, member: str, kind: str) -> frozenset[TopicPartition] | None:
        found = [parts for who, what, parts in self.events if (who, what) == (member, kind)]
        return found[-1] if found else None

    def settled(self) -> bool:
        a, b = self.first.assignment(), self.second.assignment()
        return (
            bool(a and b)
            and not a & b
            and len(a | b) == PARTITIONS
            and self.last("first", "assign") == frozenset(a)
            and self.last("second", "assign") == frozenset(b)
        )


@pytest_asyncio.fixture(scope="module")
async def pair(bus: Bus) -> AsyncIterator[Pair]:
    topic, group = unique("pair"), unique("pair-group")
    events: list[tuple[str, str, frozenset[TopicPartition]]] = []

    def record(member: str, kind: str) -> Callable[[set[TopicPartition]], Awaitable[None]]:
        async def listener(partitions: set[TopicPartition]) -> None:
            events.append((member, kind, frozenset(partitions)))

        return listener

    def member(name: str) -> Consumer:
        return bus.consumer(
            [topic], group, on_assign=record(name, "assign"), on_revoke=record(name, "revoke")
        )

    first, second = member("first"), member("second")
    await first.start()
    await second.start()
    made = Pair(topic, first, second, events)
    await eventually(made.settled, until=bool, timeout_s=15, what="both members settled on disjoint halves")
    yield made
    await second.stop()
    await first.stop()


def everything(topic: str) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in range(PARTITIONS)}


async def test_record_round_trips_key_value_and_headers(
    producer: Producer, readers: dict[str, Reader]
) -> None:
    reader = readers["roundtrip"]
    headers = (("event-id", b"e-1"), ("traceparent", b"00-abc-01"), ("raw", b"\x00\xff"))
    await producer.send(OutgoingMessage(reader.topic, b'{"n": 1}', key=b"order-1", headers=headers))

    [got] = await read(reader.consumer, 1)

    assert (got.topic, got.key, got.value, got.headers) == (reader.topic, b"order-1", b'{"n": 1}', headers)
    assert got.header("event-id") == b"e-1"
    assert got.offset == 0
    assert got.timestamp_ms > 0


async def test_same_key_goes_to_kafkas_partition_in_send_order(
    producer: Producer, readers: dict[str, Reader]
) -> None:
    reader = readers["order"]
    keys = [f"customer-{n}".encode() for n in range(4)]
    for i in range(10):
        for key in keys:
            await producer.send(OutgoingMessage(reader.topic, str(i).encode(), key=key))

    got = await read(reader.consumer, 40)

    for key in keys:
        mine = [m for m in got if m.key == key]
        assert {m.partition for m in mine} == {kafka_partition(key, PARTITIONS)}
        assert [m.value for m in mine] == [str(i).encode() for i in range(10)]
        assert [m.offset for m in mine] == sorted(m.offset for m in mine)


async def test_records_without_key_are_delivered(producer: Producer, readers: dict[str, Reader]) -> None:
    reader = readers["keyless"]
    await producer.send_many([OutgoingMessage(reader.topic, str(i).encode()) for i in range(12)])

    got = await read(reader.consumer, 12)

    assert {m.key for m in got} == {None}
    assert sorted(int(m.value or b"") for m in got) == list(range(12))


async def test_send_many_delivers_every_record_in_key_order(
    producer: Producer, readers: dict[str, Reader]
) -> None:
    reader = readers["send_many"]
    # ~3 KB each: a key's ~43 records fill several of a producer's batches (64 KiB), sent in turn.
    batch = [
        OutgoingMessage(reader.topic, b"%04d:" % i + b"x" * 3000, key=f"k{i % 7}".encode())
        for i in range(300)
    ]

    await producer.send_many(batch)

    got = await read(reader.consumer, 300)
    assert Counter(m.value for m in got) == Counter(m.value for m in batch)
    for n in range(7):
        mine = [int((m.value or b"")[:4]) for m in got if m.key == f"k{n}".encode()]
        assert mine == sorted(mine)


async def test_group_members_split_partitions_and_each_record_is_read_once(
    producer: Producer, pair: Pair
) -> None:
    await producer.send_many(
        [OutgoingMessage(pair.topic, str(i).encode(), key=f"k{i}".encode()) for i in range(60)]
    )

    seen: dict[str, list[tuple[TopicPartition, bytes | None]]] = {"first": [], "second": []}

    async def drain(name: str, consumer: Consumer) -> None:
        for m in await consumer.getmany(timeout_s=0.3, max_records=100):
            seen[name].append((m.tp, m.value))

    async def read_both() -> None:
        while len(seen["first"]) + len(seen["second"]) < 60:
            await asyncio.gather(drain("first", pair.first), drain("second", pair.second))

    await asyncio.wait_for(read_both(), 15)

    values = Counter(v for got in seen.values() for _, v in got)
    assert values == Counter(str(i).encode() for i in range(60))
    assert seen["first"] and seen["second"]
    assert {tp for tp, _ in seen["first"]} <= pair.first.assignment()
    assert {tp for tp, _ in seen["second"]} <= pair.second.assignment()


async def test_rebalance_revokes_from_the_first_member_before_assigning_to_the_second(pair: Pair) -> None:
    assert pair.events[0] == ("first", "assign", frozenset(everything(pair.topic)))
    order = [(who, what) for who, what, _ in pair.events]
    revoked_at = order.index(("first", "revoke"))
    assert revoked_at < order.index(("second", "assign"))
    assert pair.events[revoked_at][2] >= pair.second.assignment()


async def test_commit_of_a_partition_another_member_owns_raises_commit_failed(pair: Pair) -> None:
    owned_by_second = next(iter(pair.second.assignment()))

    with pytest.raises(CommitFailed):
        await pair.first.commit({owned_by_second: 1})


async def test_two_groups_each_receive_every_record(producer: Producer, readers: dict[str, Reader]) -> None:
    a, b = readers["fanout_a"], readers["fanout_b"]
    await producer.send_many(
        [OutgoingMessage(a.topic, str(i).encode(), key=str(i).encode()) for i in range(10)]
    )

    got_a, got_b = await asyncio.gather(read(a.consumer, 10), read(b.consumer, 10))

    expected = {str(i).encode() for i in range(10)}
    assert {m.value for m in got_a} == expected
    assert {m.value for m in got_b} == expected


async def test_uncommitted_records_are_redelivered_to_the_next_member(bus: Bus, producer: Producer) -> None:
    topic, group = unique("redeliver"), unique("redeliver-group")
    await producer.send_many([OutgoingMessage(topic, str(i).encode(), key=str(i).encode()) for i in range(6)])
    first = bus.consumer([topic], group)
    await first.start()
    read_first = await read(first, 6)
    await first.stop()
    with pytest.raises(CommitFailed):  # too late: a stopped member owns nothing
        await first.commit({m.tp: m.offset + 1 for m in read_first})

    second = bus.consumer([topic], group)
    await second.start()
    try:
        read_again = await read(second, 6)
    finally:
        await second.stop()

    assert {(m.tp, m.offset) for m in read_again} == {(m.tp, m.offset) for m in read_first}


async def test_restarted_member_resumes_after_the_committed_offset(bus: Bus, producer: Producer) -> None:
    topic, group = unique("resume"), unique("resume-group")
    await producer.send_many([OutgoingMessage(topic, str(i).encode(), key=b"one-key") for i in range(10)])
    first = bus.consumer([topic], group)
    await first.start()
    got = await read(first, 10)
    await first.commit({got[5].tp: got[5].offset + 1})
    await first.stop()

    second = bus.consumer([topic], group)
    await second.start()
    try:
        rest = await read(second, 4)
    finally:
        await second.stop()

    assert [m.offset for m in rest] == [6, 7, 8, 9]
    assert [m.value for m in rest] == [b"6", b"7", b"8", b"9"]


async def test_seek_rereads_from_the_given_offset(producer: Producer, readers: dict[str, Reader]) -> None:
    reader = readers["seek"]
    await producer.send_many([OutgoingMessage(reader.topic, str(i).encode(), key=b"k") for i in range(5)])
    first_pass = await read(reader.consumer, 5)

    await reader.consumer.seek(first_pass[0].tp, 2)
    second_pass = await read(reader.consumer, 3)

    assert [(m.offset, m.value) for m in second_pass] == [(2, b"2"), (3, b"3"), (4, b"4")]


async def test_pause_holds_back_a_partition_and_resume_releases_it(
    producer: Producer, readers: dict[str, Reader]
) -> None:
    reader = readers["pause"]
    held_key, free_key = keys_on_distinct_partitions(2, PARTITIONS)
    held = TopicPartition(reader.topic, kafka_partition(held_key, PARTITIONS))
    reader.consumer.pause({held})
    await producer.send_many([OutgoingMessage(reader.topic, b"held", key=held_key) for _ in range(3)])
    await producer.send_many([OutgoingMessage(reader.topic, b"free", key=free_key) for _ in range(3)])

    while_paused = await read(reader.consumer, 3)
    nothing_more = await reader.consumer.getmany(timeout_s=0.3, max_records=10)
    reader.consumer.resume({held})
    after_resume = await read(reader.consumer, 3)

    assert [m.value for m in while_paused] == [b"free"] * 3
    assert nothing_more == []
    assert [(m.tp, m.value) for m in after_resume] == [(held, b"held")] * 3


async def test_lag_counts_records_not_yet_read(producer: Producer, readers: dict[str, Reader]) -> None:
    reader = readers["lag"]
    assert sum((await reader.consumer.lag()).values()) == 0
    # One record per send: the test broker reports a partition's end as its last batch's base + 1.
    for _ in range(7):
        await producer.send(OutgoingMessage(reader.topic, b"x", key=b"k"))

    before = await reader.consumer.lag()
    await read(reader.consumer, 3)
    after = await reader.consumer.lag()

    tp = TopicPartition(reader.topic, kafka_partition(b"k", PARTITIONS))
    assert set(before) == everything(reader.topic)
    assert (before[tp], sum(before.values())) == (7, 7)
    assert (after[tp], sum(after.values())) == (4, 4)


async def test_ensure_topics_is_idempotent_and_keeps_the_first_partition_count(bus: Bus, twin: Bus) -> None:
    topic, other = unique("ensure"), unique("ensure-other")

    await bus.ensure_topics([topic], partitions=3)
    await twin.ensure_topics([topic], partitions=3)
    await twin.ensure_topics([topic, other])

    consumer = bus.consumer([topic, other], unique("ensure-group"))
    await consumer.start()
    try:
        owned = consumer.assignment()
    finally:
        await consumer.stop()
    assert {tp for tp in owned if tp.topic == topic} == {TopicPartition(topic, p) for p in range(3)}
    assert {tp for tp in owned if tp.topic == other} == everything(other)


async def test_ping_answers_while_the_broker_is_up(bus: Bus) -> None:
    await bus.ping()
