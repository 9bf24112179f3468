"""Orders ingest on a 3-node cluster across a broker kill: an outside producer keeps sending (and
resends a batch the cluster did not acknowledge), the leader of a partition is killed with kill -9
and restarted; every order is stored once, with its items once, nothing dead-lettered."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import asyncpg
import orjson

from keel.core.bus import OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.orders.fake import fake_order
from keel.orders.settings import OrderSettings
from keel.orders.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.cluster.conftest import send_across_a_leader_kill
from tests.support.apache_kafka import KafkaCluster
from tests.support.eventually import eventually
from tests.support.serving import serving_app
from tests.support.topic_log import KafkaTopicLog

BATCH = 50


async def _stored(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders")), int(
            await conn.fetchval("SELECT count(*) FROM items")
        )
    finally:
        await conn.close()


async def test_orders_ingest_across_a_leader_kill_stores_every_order_once(
    kafka_cluster: KafkaCluster, fresh_pg_dsn: str, tmp_path: Path
) -> None:
    count = 1000 * chaos_scale()
    rng = random.Random(uuid.uuid4().int)
    suffix = uuid.uuid4().hex[:8]
    settings = OrderSettings.model_validate(
        {
            "postgres_dsn": fresh_pg_dsn,
            "kafka_brokers": kafka_cluster.bootstrap,
            "kafka_replication_factor": 3,
            "kafka_idempotence": True,
            "kafka_timeout_s": 5.0,
            "kafka_topic": f"orders-{suffix}",
            "kafka_group_id": f"order-svc-{suffix}",
            "data_dir": tmp_path / "keel",
        }
    )
    orders = [fake_order(rng) for _ in range(count)]
    items = sum(len(o["items"]) for o in orders)
    bus = KafkaBus(kafka_cluster.bootstrap, idempotence=True, replication_factor=3, timeout_s=5.0)
    producer = bus.producer()
    async with serving_app([SPEC], settings):
        await producer.start()
        messages = [
            OutgoingMessage(settings.kafka_topic, orjson.dumps(o), key=o["order_uid"].encode())
            for o in orders
        ]
        kill = await send_across_a_leader_kill(kafka_cluster, producer, messages, BATCH)
        victim, killed_at, resent = kill.victim, kill.killed_at, kill.resent
        stored = await eventually(
            lambda: _stored(fresh_pg_dsn),
            until=lambda s: s[0] >= count,
            timeout_s=90,
            what="every order stored",
        )
        stored_s = time.monotonic() - killed_at
        assert victim is not None
        victim.start()
    await bus.close()
    dlq = await KafkaTopicLog(kafka_cluster.bootstrap, settings.dlq_topic).open()
    try:
        dead = await dlq.size()
    finally:
        await dlq.close()
    print(
        f"\norders ingest across a leader kill (node {victim.node_id}): {count:,} orders, {resent} batches resent "
        f"by the producer; all stored {stored_s:.1f} s after the kill; rows {stored[0]:,} orders / "
        f"{stored[1]:,} items (expected {count:,} / {items:,}); dead-lettered {dead}"
    )
    assert stored == (count, items) and dead == 0
