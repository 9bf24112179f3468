"""The HA suite: a 3-node Apache Kafka cluster of the module's own (replication factor 3,
min.insync.replicas 2), whose brokers the tests kill and restart. Sizes scale with KEEL_CHAOS_SCALE."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from keel.core.bus import OutgoingMessage, Producer
from keel.core.bus.errors import BusError
from tests.support import apache_kafka, servers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(autouse=True)
def unlimited_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests create thousands of tickets as one user: the per-user rate limit would refuse them."""
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")


_running: list[apache_kafka.KafkaCluster] = []


@pytest.fixture(scope="session")
def _shared_cluster() -> Iterator[apache_kafka.KafkaCluster]:
    """One cluster for the whole HA suite (starting one costs ~10 s); stopped after its last test."""
    if servers.broker_kind() != "kafka":
        pytest.skip("the HA suite needs Apache Kafka (KEEL_TEST_BROKER=kafka): Tansu has no replication")
    with apache_kafka.running_cluster(3) as cluster:
        _running.append(cluster)
        yield cluster
        _running.clear()


@pytest.fixture
def kafka_cluster(_shared_cluster: apache_kafka.KafkaCluster) -> apache_kafka.KafkaCluster:
    """The shared cluster with every node up: a test that killed a node and failed before restarting
    it must not hand the next test a degraded cluster."""
    for node in _shared_cluster.nodes:
        if node.proc is None or node.proc.poll() is not None:
            node.start()
    return _shared_cluster


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _running and (nextitem is None or "tests/cluster/" not in str(nextitem.fspath)):
        apache_kafka.stop_cluster(_running.pop())


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


@dataclass
class LeaderKill:
    victim: apache_kafka.KafkaNode
    killed_at: float  # time.monotonic()
    resent: int  # batches the cluster did not acknowledge, sent again


async def send_across_a_leader_kill(
    cluster: apache_kafka.KafkaCluster, producer: Producer, messages: Sequence[OutgoingMessage], batch: int
) -> LeaderKill:
    """Send `messages` in batches as an outside producer does (resending a batch the cluster did not
    acknowledge), killing with kill -9 the leader of partition 0 of their topic once a third is sent."""
    kill: LeaderKill | None = None
    resent = 0
    for start in range(0, len(messages), batch):
        if kill is None and start >= len(messages) // 3:
            victim = cluster.by_id(await leader_of(cluster.bootstrap, messages[0].topic, 0))
            victim.kill()
            kill = LeaderKill(victim, time.monotonic(), 0)
        while True:
            try:
                await producer.send_many(messages[start : start + batch])
                break
            except BusError:
                resent += 1
    assert kill is not None
    kill.resent = resent
    return kill
