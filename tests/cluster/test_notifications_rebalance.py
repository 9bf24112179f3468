"""The tickets notifications consumer as a group of processes on a 3-node cluster, while members die,
join, leave and restart under traffic: every ticket notified once, the group's lag back to 0.

- kill -9 one of three members and start a fourth mid-stream (the group waits out the dead
  member's session, then hands its partitions over);
- scale 3 -> 1 -> 3 gracefully (SIGTERM: the member finishes its batch, commits and leaves at once);
- rolling restart: SIGTERM each member in turn and start its replacement.

The API (without workers) and the outbox relay run in this process; each member is a
`tests.support.tickets_worker_process consumer`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.consumer import AIOKafkaConsumer

from keel.core.runtime import build_app
from keel.tickets.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.support.apache_kafka import KafkaCluster
from tests.support.eventually import eventually
from tests.support.tickets_worker_process import GO, READY

ROOT = Path(__file__).resolve().parents[2]
GROUP = "tickets-notifications"


class Member:
    """One consumer process of the group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Member:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.tickets_worker_process",
            "consumer",
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the child's for its life
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(GO)
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert READY in line.decode(), self.log.read_text()[-2000:]
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until it exited)."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        return code, time.monotonic() - began


async def _notified(dsn: str, user: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM notifications WHERE user_id = $1", user
        )
    finally:
        await conn.close()
    return int(row["n"]), int(row["d"])


async def _group_lag(brokers: list[str]) -> int:
    """The group's committed offsets against the log ends of tickets.events, summed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    reader = AIOKafkaConsumer(bootstrap_servers=brokers)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(GROUP)
        partitions = [TopicPartition("tickets.events", p) for p in range(6)]
        ends = await reader.end_offsets(partitions)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
    finally:
        await reader.stop()
        await admin.close()


@pytest.mark.timeout(300)
async def test_members_killed_added_scaled_and_restarted_lose_nothing_and_notify_once(
    kafka_cluster: KafkaCluster,
    fresh_pg_dsn: str,
    redis_url: str,
    make_settings: Any,
    tmp_path: Path,
) -> None:
    total = 1200 * chaos_scale()
    user = f"rebalance-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "POSTGRES_DSN": fresh_pg_dsn,
        "REDIS_URL": redis_url,
        "KAFKA_BROKERS": ",".join(kafka_cluster.bootstrap),
        "KAFKA_IDEMPOTENCE": "true",
        "KAFKA_REPLICATION_FACTOR": "3",
        "KEEL_DATA_DIR": str(tmp_path / "keel"),
        "TICKETS_RATE_LIMIT": "",
    }
    settings = make_settings(
        postgres_dsn=fresh_pg_dsn,
        redis_url=redis_url,
        kafka_brokers=kafka_cluster.bootstrap,
        kafka_replication_factor=3,
        kafka_idempotence=True,
        kafka_timeout_s=5.0,
    )
    # The API serves; the relay is its only worker here (no notifications consumer in this process).
    app = build_app([SPEC], settings, run_workers=True)
    members: list[Member] = []
    counter = iter(range(10**9))

    def member() -> Member:
        return Member(env, tmp_path / f"member-{next(counter)}.log")

    created: list[str] = []
    figures: list[str] = []

    async def create(n: int) -> None:
        async def one(i: int) -> None:
            r = await client.post(
                "/v1/tickets",
                json={"title": f"ticket {i}", "description": "rebalance"},
                headers={"X-User-Id": user},
            )
            assert r.status_code == 201, r.text
            created.append(r.json()["id"])

        for start in range(0, n, 20):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 20))))

    async def caught_up(what: str, began: float) -> None:
        target = len(created)
        await eventually(
            lambda: _notified(fresh_pg_dsn, user),
            until=lambda c: c[1] >= target,
            timeout_s=60,
            interval_s=0.1,
            what=what,
        )
        figures.append(f"{what} {time.monotonic() - began:.1f} s")

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://tickets", timeout=30
        ) as client,
    ):
        # The in-process app runs its own notifications consumer too: it is one more group member,
        # so every step below also rebalances partitions onto and off it.
        members += await asyncio.gather(*(member().start() for _ in range(3)))
        step = total // 4
        await create(step)
        await caught_up("3+1 members caught up", time.monotonic())

        began = time.monotonic()
        members[0].kill()  # kill -9: no LeaveGroup; the group waits out its session
        members[0] = await member().start()
        await create(step)
        await caught_up("after kill -9 + a new member", began)

        began = time.monotonic()
        exits = [await m.terminate() for m in members[1:]]  # scale 3 -> 1
        await create(step)
        await caught_up("after scaling to 1", began)
        members[1:] = await asyncio.gather(*(member().start() for _ in range(2)))  # and back to 3

        for i in range(len(members)):  # rolling restart under traffic
            load = asyncio.ensure_future(create(step // len(members)))
            exits.append(await members[i].terminate())
            members[i] = await member().start()
            await load
        began = time.monotonic()
        await caught_up("after the rolling restart", began)
        lag = await eventually(
            lambda: _group_lag(kafka_cluster.bootstrap), until=lambda n: n == 0, timeout_s=30, what="lag 0"
        )
        notified, distinct = await _notified(fresh_pg_dsn, user)
        for m in members:
            await m.terminate()

    print(
        f"\nrebalances with {len(created):,} creates: {'; '.join(figures)}; graceful exits "
        f"{[f'{code}/{s:.1f}s' for code, s in exits]}; notified {notified} ({distinct} distinct) "
        f"of {len(created)}; group lag {lag}"
    )
    assert all(code == 0 for code, _ in exits)
    assert all(s < 15 for _, s in exits)  # a member leaves as soon as its batch is done
    assert distinct == len(set(created)) == len(created) and notified == distinct and lag == 0
