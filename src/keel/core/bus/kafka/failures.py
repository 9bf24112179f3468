"""What the broker's failures look like to the adapter."""

from __future__ import annotations

from aiokafka.errors import KafkaError

# What a dead or silent broker surfaces as, depending on where the wait ends.
UNREACHABLE = (TimeoutError, KafkaError, OSError)

NO_PRODUCER_ID = (
    "the broker refused the idempotent producer a producer id (InitProducerId): for a broker without "
    "idempotent producers set KAFKA_IDEMPOTENCE=false"
)
