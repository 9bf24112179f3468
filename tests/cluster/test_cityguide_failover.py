"""The cityguide chain on a 3-node cluster across a broker kill: 200 routes confirmed by an outside
producer while the leader of a `route.confirmed` partition is killed with kill -9 and restarted
later. Every hop (route.confirmed → story.generate → story.generated → tts.requested →
tts.completed → delivery.prefetch) crosses the kill through an outbox and an inbox: every route
completes, each with one job per point, one set of outgoing events, nothing dead-lettered."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from keel.cityguide import topics
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.spec import SPEC as TTS
from keel.core.bus import OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.core.settings import Settings
from tests.chaos.conftest import chaos_scale
from tests.cluster.conftest import send_across_a_leader_kill
from tests.integration.cityguide.support import published_for
from tests.support.apache_kafka import KafkaCluster
from tests.support.eventually import eventually
from tests.support.serving import serving_app
from tests.support.topic_log import KafkaTopicLog

POINTS = [{"name": "Кремль"}, {"name": "Улица Баумана"}, {"name": "Озеро Кабан"}, {"name": "Набережная"}]
BATCH = 10


async def _fetch(dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


# Its own deadlines (the routes 180 s, the killed node back 60 s) exceed the suite's 120 s: under CI's
# load, beside the other cluster suites, the routes alone took 85 s once and the restart ran out.
@pytest.mark.timeout(300)
async def test_200_routes_across_a_leader_kill_all_complete_once(
    kafka_cluster: KafkaCluster,
    fresh_pg_dsn: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Silence of the speech's length: the broker's failover is under test here, not the synthesis.
    monkeypatch.setenv("TTS_MODE", "instant")
    count = 200 * chaos_scale()
    prefix = f"ha-{uuid.uuid4().hex[:6]}-"
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path / "keel",
            "postgres_dsn": fresh_pg_dsn,
            "redis_url": redis_url,
            "kafka_brokers": kafka_cluster.bootstrap,
            "kafka_replication_factor": 3,
            "kafka_idempotence": True,
            "kafka_timeout_s": 5.0,
        }
    )
    routes = [f"{prefix}{i:05d}" for i in range(count)]
    bus = KafkaBus(kafka_cluster.bootstrap, idempotence=True, replication_factor=3, timeout_s=5.0)
    producer = bus.producer()
    completed = (
        f"SELECT count(*) FROM cityguide_workflows WHERE status = 'completed' AND route_id LIKE '{prefix}%'"
    )
    async with serving_app(
        [ORCHESTRATOR, DELIVERY, STORY, TTS], settings, headers={"X-User-Id": "failover-reader"}
    ) as (_, client):
        await producer.start()
        confirmed = [
            OutgoingMessage(
                topics.ROUTE_CONFIRMED,
                orjson.dumps({"route_id": r, "mode": "walk", "city": "Казань", "points": POINTS}),
                key=r.encode(),
            )
            for r in routes
        ]
        kill = await send_across_a_leader_kill(kafka_cluster, producer, confirmed, BATCH)
        victim, killed_at, resent = kill.victim, kill.killed_at, kill.resent
        done = await eventually(
            lambda: _fetch(fresh_pg_dsn, completed),
            until=lambda n: n >= count,
            timeout_s=180,
            what="all routes",
        )
        completed_s = time.monotonic() - killed_at
        assert victim is not None
        victim.start()
        # Delivery consumes tts.completed in a group of its own: every route's links, once each.
        for route_id in routes[:: max(count // 20, 1)]:
            listed = await eventually(
                lambda route_id=route_id: client.get(
                    "/delivery/prefetch", params={"route_id": route_id, "next": 50}
                ),
                until=lambda r: r.status_code == 200 and len(r.json()["items"]) >= len(POINTS),
                timeout_s=60,
                what=f"links of {route_id}",
            )
            assert len(listed.json()["items"]) == len(POINTS)
        # One story.generate, one tts.requested per point and one delivery.prefetch per route: a hop
        # applied twice would have written its events twice. Read while the relay still runs.
        emitted = len(await published_for(fresh_pg_dsn, kafka_cluster.bootstrap, prefix))
    await bus.close()
    jobs = await _fetch(
        fresh_pg_dsn,
        f"SELECT count(*) FROM cityguide_tts_jobs WHERE status = 'completed' AND route_id LIKE '{prefix}%'",
    )
    failed = await _fetch(
        fresh_pg_dsn,
        f"SELECT count(*) FROM cityguide_workflows WHERE status <> 'completed' AND route_id LIKE '{prefix}%'",
    )
    dlq = await KafkaTopicLog(kafka_cluster.bootstrap, topics.DLQ).open()
    try:
        dead = await dlq.size()
    finally:
        await dlq.close()
    print(
        f"\ncityguide across a leader kill (node {victim.node_id}): {count} routes, {resent} batches resent by "
        f"the producer; all completed {completed_s:.1f} s after the kill; jobs {jobs} (expected "
        f"{count * len(POINTS)}), outgoing events {emitted} (expected {count * (len(POINTS) + 2)}), "
        f"dead-lettered {dead}"
    )
    assert (done, failed, jobs, dead) == (count, 0, count * len(POINTS), 0)
    assert emitted == count * (len(POINTS) + 2)
