"""Picks the bus adapter from settings: Kafka when brokers are configured, the memory bus otherwise."""

from __future__ import annotations

from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.bus.port import Bus
from keel.core.settings import Settings


def build_bus(settings: Settings) -> Bus:
    if settings.kafka_brokers:
        return KafkaBus(
            settings.kafka_brokers,
            idempotence=settings.kafka_idempotence,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            timeout_s=settings.kafka_timeout_s,
            security=settings.kafka_security(),
            dlq_retention_ms=settings.dlq_retention_days * 86_400_000,
        )
    return MemoryBus(settings.kafka_partitions)
