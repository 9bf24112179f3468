"""Order ingest, broker → 4 tables: `keel serve orders` consuming fake orders from the broker, against
the same batch statement (`keel.orders.repository.upsert_orders`, the orders' JSON in one statement)
driven straight through asyncpg at the same batch size, one client per partition.

pgbench cannot build a batch's JSON parameter, so the limit runs the service's own statement from a bare
driver loop instead: what the consumer runner, decoding and validation cost on top of the database.

Each run puts its orders on a topic of its own before the service starts, and the two sides take turns
(the tables grow with every run); both rates come from the rows' own transaction times."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from bench import profile
from bench.loadgen import cpu_seconds
from bench.procs import free_port, keel_bin, service
from bench.report import Row, Sample, median
from bench.workloads import Context
from bench.workloads.broker import new_topic

from keel.core.bus.kafka import KafkaBus
from keel.core.schema import upgrade
from keel.core.settings import Settings
from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import Order, order_json, parse_order
from keel.orders.settings import OrderSettings

TARGET_RATIO = 0.8  # issue 21's target
# Orders per run: a few seconds of ingest on 2 cores.
ORDERS = 40_000
POLL_S = 0.05
DEADLINE_S = 90.0
PROGRESS_S = 0.25
COUNT = "SELECT count(*) FROM orders WHERE order_uid BETWEEN $1 AND $2"
WINDOW = """
WITH run AS (SELECT updated_at FROM orders WHERE order_uid BETWEEN $1 AND $2)
SELECT count(*) FILTER (WHERE updated_at > (SELECT min(updated_at) FROM run)),
       extract(epoch FROM max(updated_at) - min(updated_at))
FROM run
"""


def fake_orders(prefix: str, count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [fake_order(rng, order_uid=f"{prefix}{n:06d}") for n in range(count)]


async def produce(brokers: str, topic: str, orders: Sequence[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(topic, orjson.dumps(o), key=str(o["order_uid"]).encode()) for o in orders
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def uid_range(prefix: str) -> tuple[str, str]:
    """The first and last order_uid `fake_orders(prefix, ...)` makes: a range the primary key's index
    answers, where `LIKE prefix%` read the whole table (its collation is not C) and slowed the run it
    measured as the table grew."""
    return f"{prefix}000000", f"{prefix}999999"


async def window_rate(conn: asyncpg.Connection, prefix: str) -> float:
    """Orders/s from the rows' own times (`updated_at`, each transaction's start): the rows written
    after the first transaction began, over the time from its start to the last one's."""
    rows, span = await conn.fetchrow(WINDOW, *uid_range(prefix))
    return float(rows) / float(span)


async def ingest_rate(dsn: str, prefix: str, count: int, pid: int) -> tuple[float, float]:
    """Orders/s of the service over its rows (the group join is not timed), and its CPU ms per order
    from its first row to its last."""
    conn = await asyncpg.connect(dsn)
    try:
        low, high = uid_range(prefix)
        first, cpu = 0, 0.0
        deadline = time.monotonic() + DEADLINE_S
        while not first:
            first = int(await conn.fetchval(COUNT, low, high))
            if first:
                cpu = cpu_seconds(pid)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"no order ingested after {DEADLINE_S}s")
            await asyncio.sleep(POLL_S)
        while (done := int(await conn.fetchval(COUNT, low, high))) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"orders ingested {done}/{count} after {DEADLINE_S}s")
            # Coarser once rows arrive: each count reads every row of the run written so far.
            await asyncio.sleep(PROGRESS_S)
        spent = cpu_seconds(pid) - cpu
        return await window_rate(conn, prefix), spent / (count - first) * 1e3
    finally:
        await conn.close()


async def driver_rate(
    dsn: str, prefix: str, orders: Sequence[Order], batch: int, clients: int
) -> tuple[float, float]:
    """The same upserts, batch by batch in one transaction each, from `clients` connections (the
    orders validated and serialised beforehand): orders/s measured as the service's are, and this
    process's CPU ms per order."""
    batches = [
        [order_json(o) for o in sorted(orders[i : i + batch], key=lambda o: o["order_uid"])]
        for i in range(0, len(orders), batch)
    ]
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    try:

        async def one(chunk: Sequence[bytes]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await repository.upsert_orders(conn, chunk)

        cpu = time.process_time()
        await asyncio.gather(*(one(b) for b in batches))
        spent = time.process_time() - cpu
        async with pool.acquire() as conn:
            return await window_rate(conn, prefix), spent / len(orders) * 1e3
    finally:
        await pool.close()


class OrderIngest:
    name = "orders-ingest"

    async def run(self, ctx: Context) -> Sequence[Row]:
        await upgrade(ctx.dsn)
        figures: list[Sample] = []
        limit: list[Sample] = []
        sides = [(figures, service_run), (limit, driver_run)]
        for run in range(ctx.cfg.runs):
            # In turns, each first every other run: both write to the same tables, which grow by
            # ORDERS rows each time, and the upsert slows as they do.
            for samples, measure in sides if run % 2 == 0 else sides[::-1]:
                samples.append(await measure(ctx, run))
        return [
            Row(
                "order ingest broker → 4 tables vs the same upserts from a bare driver loop",
                median(figures),
                median(limit),
                "orders/s",
                TARGET_RATIO,
                note="limit is not pgbench (it cannot build the batch's JSON parameter); "
                "in turns; see bench/workloads/ingest.py",
            )
        ]


async def service_run(ctx: Context, run: int) -> Sample:
    """`keel serve orders` draining ORDERS orders put on a topic of their own before it started: the
    window measures the service, not the bench's own producer (which shared the two cores with it)."""
    prefix = f"i{ctx.run_id}r{run}x"
    bus = KafkaBus([ctx.brokers], idempotence=ctx.idempotence, partitions=Settings().kafka_partitions)
    try:
        topic = await new_topic(bus, "bench-orders")  # with the service's partitions, as it would make it
    finally:
        await bus.close()
    await produce(ctx.brokers, topic, fake_orders(prefix, ORDERS, seed=run))
    env = {**ctx.broker_env(), "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": f"bench-{ctx.run_id}-{run}"}
    port = free_port()
    argv = [keel_bin(), "serve", "orders", "--port", str(port)]
    out = ctx.logdir / "profile-orders-ingest.txt"
    async with service(argv, env, ctx.logdir, f"keel-serve-orders-ingest-{run}", port) as child:
        # The first run's drain sampled (it begins once the group has joined, seconds after start).
        spy = asyncio.create_task(profile.run_spy(child.pid, out)) if ctx.cfg.profile and not run else None
        rate, cpu_ms = await ingest_rate(ctx.dsn, prefix, ORDERS, child.pid)
        if spy is not None:
            shown, error = await spy
            context = (
                f"`{shown}` on `keel serve orders` from its start, {ORDERS:,} orders waiting on the broker."
            )
            ctx.notes.append(
                error
                or profile.write("profile-orders-ingest", "order ingest (keel serve orders)", context, out)
            )
    command = f"{ORDERS:,} orders on the broker, then KAFKA_BROKERS=<private> keel serve orders"
    return Sample(rate, command, cpu_ms=cpu_ms)


async def driver_run(ctx: Context, run: int) -> Sample:
    batch = OrderSettings().order_batch_size
    partitions = Settings().kafka_partitions
    prefix = f"d{ctx.run_id}r{run}x"
    orders = [parse_order(o) for o in fake_orders(prefix, ORDERS, seed=run)]
    rate, cpu_ms = await driver_rate(ctx.dsn, prefix, orders, batch, partitions)
    command = f"repository.upsert_orders over asyncpg, batches of {batch}, {partitions} connections"
    return Sample(rate, command, cpu_ms=cpu_ms)
