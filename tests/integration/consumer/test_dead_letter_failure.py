"""When the dead-letter topic cannot be written, the source offset is not committed: the message is
kept (its partition waits behind it) and dead-lettered once the dead-letter broker is back."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition

from keel.core.bus import Bus, OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.consumer import ConsumerOptions, ConsumerRunner, RetryPolicy, Transactional
from keel.core.db import Database
from tests.integration.consumer.conftest import (
    PARTITIONS,
    consumed_now,
    dead_letters,
    event_record,
    running,
    unique,
)
from tests.integration.consumer.script import Effects, Script
from tests.support.bus import kafka_partition, keys_on_distinct_partitions, read, started_producer
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers
from tests.support.tcp_proxy import TcpProxy

RETRY = RetryPolicy(max_attempts=2, base_s=0.05, max_s=0.2)


def _runner(
    bus: Bus, dlq_bus: Bus, db: Database, script: Script, topic: str, group: str, dlq: str
) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=Transactional(script.handle),
        db=db,
        dlq_topic=dlq,
        dlq_bus=dlq_bus,
        options=ConsumerOptions(retry=RETRY),
    )


async def _publish_poison_then_good(bus: Bus, topic: str) -> tuple[str, int]:
    """A poison record and one behind it on partition A, a good one on partition B; returns A's key."""
    key_a, key_b = (k.decode() for k in keys_on_distinct_partitions(2, PARTITIONS, prefix=unique("k")))
    await bus.ensure_topics([topic])
    async with started_producer(bus) as producer:
        await producer.send(OutgoingMessage(topic, b"{not json", key=key_a.encode()))
        await producer.send(event_record(topic, "behind", key=key_a))
        await producer.send(event_record(topic, "other", key=key_b))
    return key_a, kafka_partition(key_a.encode(), PARTITIONS)


async def test_dead_letter_publish_failing_leaves_the_source_offset_uncommitted(
    memory_bus: MemoryBus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic, group, dlq = unique("dlq-down"), unique("dlq-down-group"), unique("dlq-down.dlq")
    unreachable = MemoryBus(PARTITIONS)
    await unreachable.close()  # every publish to it fails
    key_a, partition_a = await _publish_poison_then_good(memory_bus, topic)

    async with running(_runner(memory_bus, unreachable, db, script, topic, group, dlq)):
        await effects.wait_for("other")  # partition B flows
        await eventually(
            lambda: consumed_now(group, topic, "retried"), until=lambda n: n >= 2, what="dead-letter retries"
        )
        assert await effects.count("behind") == 0  # waits behind the poison, in order

    # Stopped: the group's committed offset on partition A is still the poison record's.
    member = memory_bus.consumer([topic], group)
    await member.start()
    redelivered = await read(member, 2)
    await member.stop()
    first_of_a = min((m for m in redelivered if m.partition == partition_a), key=lambda m: m.offset)
    assert (first_of_a.offset, first_of_a.value) == (0, b"{not json")

    # Retried later, with the dead-letter topic reachable: dead-lettered, and the next one handled.
    async with (
        dead_letters(memory_bus, dlq) as letters,
        running(_runner(memory_bus, memory_bus, db, script, topic, group, dlq)),
    ):
        letter = await letters.wait_for(key_a.encode())
        await effects.wait_for("behind")
    assert letter.value == b"{not json"


async def test_dead_letter_broker_coming_back_gets_the_dead_letter_and_only_then_the_offset_commits(
    kafka_brokers: list[str], db: Database, effects: Effects
) -> None:
    script = Script()
    topic, group, dlq = unique("dlq-proxy"), unique("dlq-proxy-group"), unique("dlq-proxy.dlq")
    proxy = await TcpProxy(int(kafka_brokers[0].rsplit(":", 1)[1])).start()
    proxy.set_mode("refuse")
    bus = KafkaBus(kafka_brokers, idempotence=idempotent_producers(), partitions=PARTITIONS)
    # Only the first contact goes through the proxy; the broker then advertises its own address.
    dlq_bus = KafkaBus(
        [f"127.0.0.1:{proxy.port}"], idempotence=idempotent_producers(), partitions=PARTITIONS, timeout_s=1.0
    )
    try:
        await bus.ensure_topics([dlq])
        key_a, partition_a = await _publish_poison_then_good(bus, topic)
        tp_a = KafkaTopicPartition(topic, partition_a)
        async with running(_runner(bus, dlq_bus, db, script, topic, group, dlq)):
            await effects.wait_for("other")
            await eventually(
                lambda: consumed_now(group, topic, "retried"),
                until=lambda n: n >= 2,
                timeout_s=20,
                what="dead-letter retries",
            )
            assert await _committed(kafka_brokers, group, tp_a) is None
            assert await effects.count("behind") == 0

            proxy.set_mode("pass")
            async with dead_letters(bus, dlq) as letters:
                letter = await letters.wait_for(key_a.encode())
            await effects.wait_for("behind")
            await eventually(
                lambda: _committed(kafka_brokers, group, tp_a), until=lambda offset: offset == 2, timeout_s=10
            )
        assert letter.value == b"{not json"
        assert dict(letter.headers)["dlq-error-type"] == b"PoisonMessage"
    finally:
        await dlq_bus.close()
        await bus.close()
        await proxy.close()


async def _committed(brokers: list[str], group: str, tp: KafkaTopicPartition) -> int | None:
    """The group's committed offset, asked of the broker by a client that does not join the group."""
    client = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=group, enable_auto_commit=False)
    await client.start()
    try:
        offset = await client.committed(tp)
        return None if offset is None else int(offset)
    finally:
        await client.stop()
