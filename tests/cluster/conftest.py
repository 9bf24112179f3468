"""The HA suite: a 3-node Apache Kafka cluster of the module's own (replication factor 3,
min.insync.replicas 2), whose brokers the tests kill and restart. Sizes scale with KEEL_CHAOS_SCALE."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.support import apache_kafka, servers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(autouse=True)
def unlimited_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests create thousands of tickets as one user: the per-user rate limit would refuse them."""
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[apache_kafka.KafkaCluster]:
    if servers.broker_kind() != "kafka":
        pytest.skip("the HA suite needs Apache Kafka (KEEL_TEST_BROKER=kafka): Tansu has no replication")
    with apache_kafka.running_cluster(3) as cluster:
        yield cluster


async def leader_of(brokers: list[str], topic: str, partition: int = 0) -> int:
    """The node id that leads `topic`'s partition now; -1 while none does or none answers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=3000)
    try:
        await admin.start()
        (described,) = await admin.describe_topics([topic])
    except KafkaError:
        return -1
    finally:
        await admin.close()
    return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))
