"""Keel creates its topics with KAFKA_PARTITIONS partitions and KAFKA_REPLICATION_FACTOR replicas
(docs/kafka.md), not with the broker's defaults: on the 3-node cluster, whose default replication
factor is 3 and which creates no topic by itself, a platform configured for 4 partitions of 2
replicas gets exactly that, its dead-letter topic too."""

from __future__ import annotations

from collections.abc import Callable

from keel.core.bus.factory import build_bus
from keel.core.bus.kafka import KafkaBus
from keel.core.settings import Settings
from tests.support.apache_kafka import KafkaCluster


async def test_topics_get_the_configured_partitions_and_replicas(
    kafka_cluster: KafkaCluster, topic: Callable[[str], str]
) -> None:
    settings = Settings(
        _env_file=None,
        kafka_brokers=kafka_cluster.bootstrap,
        kafka_partitions=4,
        kafka_replication_factor=2,
    )
    bus = build_bus(settings)
    assert isinstance(bus, KafkaBus)
    events, dead = topic("created"), topic("created") + ".dlq"
    try:
        await bus.ensure_topics([events, dead])
        admin = await bus.admin_client()
        described = {t["topic"]: t["partitions"] for t in await admin.describe_topics([events, dead])}
    finally:
        await bus.close()
    for name in (events, dead):
        assert len(described[name]) == 4, name
        assert {len(p["replicas"]) for p in described[name]} == {2}, name
