"""build_bus picks the adapter from settings: Kafka when brokers are named, the memory bus otherwise."""

from __future__ import annotations

from collections.abc import Callable

from keel.core.bus.factory import build_bus
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.settings import Settings


async def test_brokers_in_settings_give_a_kafka_bus_with_their_options(
    make_settings: Callable[..., Settings],
) -> None:
    bus = build_bus(
        make_settings(
            kafka_brokers="b1:9092, b2:9092",
            kafka_idempotence=True,
            kafka_partitions=12,
            kafka_replication_factor=3,
        )
    )

    assert isinstance(bus, KafkaBus)
    assert (bus.brokers, bus.idempotence, bus.partitions, bus.replication_factor) == (
        ["b1:9092", "b2:9092"],
        True,
        12,
        3,
    )
    await bus.close()


async def test_no_brokers_give_a_memory_bus_with_the_configured_partitions(
    make_settings: Callable[..., Settings],
) -> None:
    bus = build_bus(make_settings(kafka_partitions=3))

    assert isinstance(bus, MemoryBus)
    await bus.ensure_topics(["t"])
    consumer = bus.consumer(["t"], "g")
    await consumer.start()
    assert len(consumer.assignment()) == 3
    await bus.close()
