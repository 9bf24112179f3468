"""The orders ingest consumer `kill -9`'d mid-batch and restarted: nothing lost, no duplicate rows.

Per round, against the real broker and PostgreSQL, with the consumer in a child process:
1. a clean consumer is killed from outside once part of the wave is stored (wherever it was);
2. KEEL_CRASH_POINTS=orders.mid_batch kills one with a batch's rows written, not yet committed;
3. KEEL_CRASH_POINTS=consumer.after_effect kills one after a batch committed, before its offsets.
A last clean consumer then drains the topic. Every produced order (the last version of those
updated in the stream) must be stored exactly as sent, once: one row in orders, deliveries and
payments, and exactly its items, per order_uid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest_asyncio

from keel.core.bus import OutgoingMessage, Producer
from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import order_json
from keel.orders.settings import OrderSettings
from tests.chaos.conftest import chaos_scale
from tests.support.bus import kafka_producer
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers

ROOT = Path(__file__).resolve().parents[2]
WAVE = 1_500  # orders per round; updates of some of them come on top
UPDATED = 0.1  # share of a wave's orders sent again with other content
CHILD_TIMEOUT_S = 90
TABLES = ("orders", "deliveries", "payments", "items")


class Zygote:
    """tests/chaos/orders_child.py: forks consumers (cheap restarts) and reports how they exited."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.live: set[int] = set()
        self.ready = False  # its imports overlap with the test's own set-up until the first spawn

    async def ask(self, line: str, timeout_s: float = CHILD_TIMEOUT_S) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        assert answer, "the consumer zygote died"
        return answer.decode().strip()

    async def spawn(self, settings: OrderSettings, log: Path, crash_points: str = "") -> Consumer:
        if not self.ready:
            assert self.proc.stdout is not None
            line = await asyncio.wait_for(self.proc.stdout.readline(), CHILD_TIMEOUT_S)
            assert line == b"ready\n", line
            self.ready = True
        pid = int(await self.ask(f"spawn {log} {crash_points or '-'} {settings.model_dump_json()}"))
        self.live.add(pid)
        return Consumer(self, pid, log)


class Consumer:
    """One forked consumer, known by its pid."""

    def __init__(self, zygote: Zygote, pid: int, log: Path) -> None:
        self.zygote, self.pid, self.log = zygote, pid, log

    async def exited(self) -> int:
        """The exit code (-9 when killed); a consumer still running after the deadline is killed."""
        try:
            code = int(await self.zygote.ask(f"wait {self.pid}"))
        except TimeoutError:
            os.kill(self.pid, signal.SIGKILL)
            raise AssertionError(f"consumer still running after {CHILD_TIMEOUT_S}s:\n{self.tail()}") from None
        self.zygote.live.discard(self.pid)
        return code

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest_asyncio.fixture(scope="session")
async def zygote() -> AsyncIterator[Zygote]:
    """Session-scoped and first among the test's fixtures: its imports overlap with the broker's
    and the template database's start."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.chaos.orders_child",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    started = Zygote(proc)
    try:
        yield started
    finally:
        for pid in started.live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()


class Store:
    """What the four tables hold, read straight from PostgreSQL."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def orders(self) -> int:
        count: int = await self.conn.fetchval("SELECT count(*) FROM orders")
        return count

    async def others_connected(self) -> int:
        """Sessions on this database besides ours: a killed consumer's last until PostgreSQL has
        finished what it had sent (a COMMIT in flight may still land) and noticed the socket close."""
        count: int = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return count

    async def settled(self) -> int:
        """The order count once no killed consumer's session is left."""
        await eventually(self.others_connected, until=lambda n: n == 0, timeout_s=30, what="sessions gone")
        return await self.orders()

    async def rows_per_order(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for table in TABLES:
            rows = await self.conn.fetch(f"SELECT order_uid, count(*) AS n FROM {table} GROUP BY order_uid")
            for row in rows:
                counts.setdefault(row["order_uid"], dict.fromkeys(TABLES, 0))[table] = row["n"]
        return counts

    async def stored(self) -> dict[str, Any]:
        """Every stored order as GET /order serves it."""
        recent = await repository.fetch_recent(self.conn, 10**9)
        return {o["order_uid"]: orjson.loads(order_json(o)) for o in recent}


@pytest_asyncio.fixture
async def store(fresh_pg_dsn: str) -> AsyncIterator[Store]:
    conn = await asyncpg.connect(fresh_pg_dsn)
    yield Store(conn)
    await conn.close()


@pytest_asyncio.fixture
async def producer(kafka_brokers: list[str]) -> AsyncIterator[Producer]:
    async with kafka_producer(kafka_brokers) as started:
        yield started


def wave(rng: random.Random, size: int) -> list[dict[str, Any]]:
    """`size` new orders, then updates (other content, other item count) of a share of them."""
    orders = [fake_order(rng) for _ in range(size)]
    updates = [fake_order(rng, order_uid=o["order_uid"]) for o in rng.sample(orders, int(size * UPDATED))]
    return orders + updates


async def produce(producer: Producer, topic: str, orders: list[dict[str, Any]]) -> None:
    # Keyed by order_uid as an outside producer does: an order and its update share a partition.
    for start in range(0, len(orders), 500):
        chunk = orders[start : start + 500]
        await producer.send_many(
            [OutgoingMessage(topic, orjson.dumps(o), key=o["order_uid"].encode()) for o in chunk]
        )


async def crash(zygote: Zygote, settings: OrderSettings, log: Path, point: str) -> None:
    consumer = await zygote.spawn(settings, log, point)
    code = await consumer.exited()
    assert code == 137, f"{point}: exit {code}\n{consumer.tail()}"


async def kill_once_some_are_stored(
    zygote: Zygote, settings: OrderSettings, log: Path, store: Store, target: int
) -> None:
    consumer = await zygote.spawn(settings, log)
    await eventually(
        store.orders, until=lambda n: n >= target, timeout_s=CHILD_TIMEOUT_S, what="a part stored"
    )
    consumer.signal(signal.SIGKILL)
    assert await consumer.exited() == -signal.SIGKILL


async def test_consumer_killed_mid_batch_and_after_commit_loses_nothing_and_duplicates_nothing(
    zygote: Zygote,
    fresh_pg_dsn: str,
    kafka_brokers: list[str],
    producer: Producer,
    store: Store,
    tmp_path: Path,
) -> None:
    rng = random.Random(uuid.uuid4().int)
    suffix = uuid.uuid4().hex[:8]
    settings = OrderSettings.model_validate(
        {
            "postgres_dsn": fresh_pg_dsn,
            "kafka_brokers": kafka_brokers,
            "kafka_idempotence": idempotent_producers(),
            "kafka_topic": f"orders-crash-{suffix}",
            "kafka_group_id": f"orders-crash-{suffix}",
            "data_dir": tmp_path / "keel",
            "cache_enabled": False,
            "order_cache_warm": 0,
            "order_batch_size": 200,  # several batches per wave, so a kill lands between and within
        }
    )
    log = tmp_path / "consumers.log"
    latest: dict[str, dict[str, Any]] = {}
    produced = kills = 0
    for _ in range(chaos_scale()):
        sent = wave(rng, WAVE)
        await produce(producer, settings.kafka_topic, sent)
        produced += len(sent)
        latest.update((o["order_uid"], o) for o in sent)

        before = await store.orders()
        await kill_once_some_are_stored(zygote, settings, log, store, before + WAVE // 3)
        stored = await store.settled()
        await crash(zygote, settings, log, "orders.mid_batch")
        # The killed batch's transaction was in flight: none of its rows became visible.
        assert await store.settled() == stored
        await crash(zygote, settings, log, "consumer.after_effect")
        kills += 3

    final = await zygote.spawn(settings, log)
    try:
        await eventually(
            store.orders,
            until=lambda n: n == len(latest),
            timeout_s=CHILD_TIMEOUT_S,
            what="all orders stored",
        )
        # Stored is not the end: an older version redelivered after a newer one must not win.
        await eventually(
            store.stored, until=lambda got: got == latest, timeout_s=30, what="every order as last sent"
        )
    finally:
        final.signal(signal.SIGTERM)
        assert await final.exited() == 0, final.tail()

    rows = await store.rows_per_order()
    expected = {
        uid: {"orders": 1, "deliveries": 1, "payments": 1, "items": len(o["items"])}
        for uid, o in latest.items()
    }
    lost = len(latest.keys() - rows.keys())
    duplicates = sum(
        max(0, rows[uid][t] - expected[uid][t]) for uid in rows.keys() & expected.keys() for t in TABLES
    )
    print(
        f"\norders consumer kill -9 mid-batch: produced {produced} ({len(latest)} orders, "
        f"{produced - len(latest)} updates), lost {lost}, duplicate rows {duplicates}, kills {kills}"
    )
    assert (lost, duplicates) == (0, 0)
    assert rows == expected
