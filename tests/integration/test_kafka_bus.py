"""Kafka adapter behaviour on a broker that is down, silent or gone: every wait is bounded."""

from __future__ import annotations

import asyncio
import gc
import signal
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.core import telemetry
from keel.core.bus import OutgoingMessage
from keel.core.bus.errors import BrokerUnavailable, PublishFailed
from keel.core.bus.kafka import KafkaBus
from tests.support import servers
from tests.support.eventually import eventually


@pytest_asyncio.fixture
async def silent_broker() -> AsyncIterator[str]:
    """A listener that accepts connections and never answers, like a hung broker."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
def private_broker() -> Iterator[servers.ChildServer]:
    """A broker of this test's own, so the test may take it down."""
    with servers.running(servers.kafka_broker()) as broker:
        yield broker


def bus_on(address: str, *, timeout_s: float = 30.0) -> KafkaBus:
    return KafkaBus([address], idempotence=servers.idempotent_producers(), timeout_s=timeout_s)


async def test_ping_fails_within_two_seconds_when_nothing_listens() -> None:
    bus = bus_on(f"127.0.0.1:{servers.free_port()}")
    started = time.monotonic()

    with pytest.raises(BrokerUnavailable):
        await bus.ping()

    assert time.monotonic() - started < 2.5
    await bus.close()


async def test_ping_fails_within_two_seconds_when_the_broker_is_silent(silent_broker: str) -> None:
    bus = bus_on(silent_broker)
    started = time.monotonic()

    with pytest.raises(BrokerUnavailable):
        await bus.ping()

    assert time.monotonic() - started < 2.5
    await bus.close()


async def test_producer_and_consumer_start_give_up_after_the_timeout_on_a_silent_broker(
    silent_broker: str,
) -> None:
    bus = bus_on(silent_broker, timeout_s=1.0)
    started = time.monotonic()

    with pytest.raises(BrokerUnavailable):
        await bus.producer().start()
    with pytest.raises(BrokerUnavailable):
        await bus.consumer(["t"], "g").start()

    assert time.monotonic() - started < 4
    await bus.close()


async def test_send_many_raises_when_the_broker_stops_acknowledging_and_drops_its_batches_quietly(
    private_broker: servers.ChildServer,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    bus = bus_on(f"127.0.0.1:{private_broker.port}", timeout_s=2.0)
    topic = f"acks-{uuid.uuid4().hex[:8]}"
    producer = bus.producer()
    await producer.start()
    # Acked on the partition the lost batches go to: its leader is known before it falls silent (on a
    # new topic another partition's leader may still be moving, and the batches would wait for it).
    await producer.send(OutgoingMessage(topic, b"before", key=b"one"))

    assert private_broker.proc is not None
    private_broker.proc.send_signal(signal.SIGSTOP)  # a leader gone silent: connections stay open

    # Two batches' worth for one partition: the first goes out and waits for its ack, the second
    # waits in aiokafka's queue behind it.
    lost = [OutgoingMessage(topic, b"x" * 1024, key=b"one") for _ in range(100)]
    accumulator = producer._producer._message_accumulator  # type: ignore[union-attr]
    try:
        with pytest.raises(PublishFailed):
            await asyncio.wait_for(producer.send_many(lost), 15)
        # None of the failed batches' futures may hold an error nobody read: asyncio logs each one
        # as "Future exception was never retrieved" whenever the garbage collector takes it.
        held = [
            (batch.future, batch._drain_waiter)
            for batches in accumulator._batches.values()
            for batch in batches
        ]
        assert len(held) == 2
        await eventually(  # the callbacks that read the outcomes run on the loop's next turns
            lambda: [f for pair in held for f in pair if f._log_traceback],
            until=lambda unread: unread == [],
            timeout_s=2,
            what="every failed batch's outcome read",
        )
        await bus.close()
        held.clear()
        del producer, bus, accumulator
        gc.collect()
        assert [(context["message"], repr(context.get("exception"))) for context in reported] == []
    finally:
        loop.set_exception_handler(None)
        private_broker.proc.send_signal(signal.SIGCONT)


async def test_ping_recovers_when_the_broker_comes_back(private_broker: servers.ChildServer) -> None:
    bus = bus_on(f"127.0.0.1:{private_broker.port}")
    await bus.ping()

    private_broker.stop()
    with pytest.raises(BrokerUnavailable):
        await bus.ping()
    private_broker.start()

    async def answers() -> bool:
        try:
            await bus.ping()
        except BrokerUnavailable:
            return False
        return True

    await eventually(answers, until=bool, timeout_s=15, what="ping answering after the broker's return")
    await bus.close()


async def test_a_record_sent_to_an_idle_consumer_arrives_within_a_fifth_of_a_second(
    kafka_brokers: list[str],
) -> None:
    """Each hop of a flow (route.confirmed → … → tts.completed) starts at an idle consumer: a record
    sent while its fetch is held by the broker must not wait out a long fetch wait."""
    bus = KafkaBus(kafka_brokers, idempotence=servers.idempotent_producers(), partitions=6)
    topic = f"idle-hop-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer([topic], f"idle-hop-{uuid.uuid4().hex[:8]}")
    producer = bus.producer()
    await consumer.start()
    await producer.start()
    try:
        delays = []
        for _ in range(6):
            assert await consumer.getmany(0.3, 10) == []  # idle: the next fetch is held by the broker
            sent = time.monotonic()
            await producer.send(OutgoingMessage(topic, b"x", key=b"k"))
            await eventually(lambda: consumer.getmany(1.0, 10), until=bool, timeout_s=5, what="the record")
            delays.append(time.monotonic() - sent)
    finally:
        await producer.stop()
        await bus.close()
    assert sorted(delays)[len(delays) // 2] < 0.2, delays


async def written_batches(brokers: list[str], topic: str) -> list[int]:
    """The size in bytes of each record batch the broker holds for partition 0 of `topic`, read
    from a raw fetch (a consumer hands over records, not the batches they came in)."""
    client = AIOKafkaClient(bootstrap_servers=brokers)
    await client.bootstrap()
    try:
        await client.add_topic(topic)  # resolves once the metadata names its partitions
        leader = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        fetch = FetchRequest(500, 1, 16 << 20, 0, [(topic, [(0, 0, 16 << 20)])])
        response = await client.send(leader, fetch)
    finally:
        await client.close()
    data = memoryview(response.topics[0][1][0][-1])  # the partition's records come last
    sizes = []
    while len(data) >= 12:
        _base_offset, length = struct.unpack_from(">qi", data)
        sizes.append(12 + length)
        data = data[12 + length :]
    return sizes


async def test_a_send_many_goes_out_in_batches_of_up_to_64_kib(kafka_brokers: list[str]) -> None:
    """A producer has one request in flight per broker, carrying a batch per partition: the batch's
    cap (aiokafka's default: 16 KiB) sets how many round trips a relay batch takes."""
    bus = KafkaBus(kafka_brokers, idempotence=servers.idempotent_producers(), partitions=1)
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    producer = bus.producer()
    await producer.start()
    try:
        await producer.send_many([OutgoingMessage(topic, b"%05d" % i + b"v" * 300) for i in range(1_000)])
    finally:
        await producer.stop()
        await bus.close()

    sizes = await written_batches(kafka_brokers, topic)

    assert sum(sizes) > 300_000
    assert len(sizes) <= 6
    assert all(48 * 1024 < size <= 64 * 1024 for size in sizes[:-1])


async def test_concurrent_send_many_onto_the_same_partitions_all_go_through(kafka_brokers: list[str]) -> None:
    """Many callers at once handing batches to the same partitions (the TTS worker's partition
    workers, each publishing its results): aiokafka holds one batch per partition and has the others
    wait for it to go out, and its wait takes the whole time waited so far off what is left at each
    turn, so a caller that lost a few turns failed with KafkaTimeoutError long before the timeout. The
    producer hands a partition's batches over one caller at a time."""
    bus = KafkaBus(kafka_brokers, idempotence=servers.idempotent_producers(), partitions=6, timeout_s=3.0)
    topic = f"contended-{uuid.uuid4().hex[:8]}"
    producer = bus.producer()
    await producer.start()
    callers, rounds, per_send = 24, 4, 60
    value = b"v" * 2_000

    async def caller(n: int) -> None:
        for r in range(rounds):
            await producer.send_many(
                [OutgoingMessage(topic, value, key=f"{n}-{r}-{i}".encode()) for i in range(per_send)]
            )

    try:
        await asyncio.gather(*(caller(n) for n in range(callers)))
        consumer = bus.consumer([topic], f"contended-{uuid.uuid4().hex[:8]}")
        await consumer.start()
        got: list[bytes] = []

        async def read_all() -> int:
            got.extend(m.key or b"" for m in await consumer.getmany(1.0, 5_000))
            return len(got)

        await eventually(
            read_all, until=lambda n: n >= callers * rounds * per_send, timeout_s=30, what="every record"
        )
        assert len(set(got)) == callers * rounds * per_send
        await consumer.stop()
    finally:
        await producer.stop()
        await bus.close()


async def test_concurrent_small_sends_share_batches_in_order_and_learn_their_offsets(
    kafka_brokers: list[str],
) -> None:
    """Callers sending one or two records at once (a worker publishing each result as it is made)
    join the partition's batch that waits for its turn: each key's records arrive in the order each
    caller sent them, and every record's send span holds the partition and offset it was written at."""
    exporter = InMemorySpanExporter()
    telemetry.setup_tracing(
        "test", None, sampler=telemetry.make_sampler("always_on", None), exporter=exporter
    )
    bus = KafkaBus(kafka_brokers, idempotence=servers.idempotent_producers(), partitions=3)
    topic = f"shared-{uuid.uuid4().hex[:8]}"
    producer = bus.producer()
    await producer.start()
    callers, sends = 40, 5

    async def caller(n: int) -> None:
        for i in range(sends):
            batch = [
                OutgoingMessage(topic, f"{n}:{i}:{j}".encode(), key=f"k{n}".encode())
                for j in range(1 + i % 2)
            ]
            await producer.send_many(batch)

    try:
        await asyncio.gather(*(caller(n) for n in range(callers)))
        tracing = telemetry.active()
        assert tracing is not None
        tracing.provider.force_flush()
        consumer = bus.consumer([topic], f"shared-{uuid.uuid4().hex[:8]}")
        await consumer.start()
        got: list[tuple[bytes, int, int]] = []

        async def read_all() -> int:
            got.extend((m.value or b"", m.partition, m.offset) for m in await consumer.getmany(1.0, 5_000))
            return len(got)

        total = callers * sum(1 + i % 2 for i in range(sends))
        await eventually(read_all, until=lambda n: n >= total, timeout_s=30, what="every record")
        await consumer.stop()
    finally:
        await producer.stop()
        await bus.close()
        telemetry.shutdown_tracing()
    for n in range(callers):
        mine = [v.decode() for v, _, _ in sorted(got, key=lambda r: r[2]) if v.startswith(f"{n}:".encode())]
        assert mine == [f"{n}:{i}:{j}" for i in range(sends) for j in range(1 + i % 2)]
    where = {(p, o) for _, p, o in got}
    spans = [s for s in exporter.get_finished_spans() if s.name == f"send {topic}"]
    assert len(spans) == total
    assert {
        (int(str(s.attributes["messaging.destination.partition.id"])), s.attributes["messaging.kafka.offset"])
        for s in spans
        if s.attributes is not None
    } == where
