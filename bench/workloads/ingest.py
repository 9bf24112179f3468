"""Order ingest, broker → 4 tables: `keel serve orders` consuming fake orders from the broker, against
the same batch statement (`keel.orders.repository.upsert_orders`, the orders' JSON in one statement)
driven straight through asyncpg at the same batch size, one client per partition.

pgbench cannot build a batch's JSON parameter, so the limit runs the service's own statement from a bare
driver loop instead: what the consumer runner, decoding and validation cost on top of the database."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from bench.procs import free_port, keel_bin, service
from bench.report import Row, Sample, median
from bench.workloads import Context

from keel.core.schema import upgrade
from keel.core.settings import Settings
from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import Order, order_json
from keel.orders.settings import OrderSettings

TARGET_RATIO = 0.8  # issue 21's target
# Orders per run: a few seconds of ingest on 2 cores (against the poll's 50 ms steps).
ORDERS = 20_000
POLL_S = 0.05
DEADLINE_S = 90.0
COUNT = "SELECT count(*) FROM orders WHERE order_uid LIKE $1"


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


async def ingest_rate(dsn: str, prefix: str, count: int) -> float:
    """Orders/s from the first row of this batch to the last (the group join is not timed)."""
    conn = await asyncpg.connect(dsn)
    try:
        began, first = 0.0, 0
        deadline = time.monotonic() + DEADLINE_S
        while True:
            done = int(await conn.fetchval(COUNT, f"{prefix}%"))
            if done and not began:
                began, first = time.perf_counter(), done
            if done >= count:
                return (count - first) / (time.perf_counter() - began)
            if time.monotonic() > deadline:
                raise TimeoutError(f"orders ingested {done}/{count} after {DEADLINE_S}s")
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()


async def driver_rate(dsn: str, orders: Sequence[Order], batch: int, clients: int) -> float:
    """The same upserts, batch by batch in one transaction each, from `clients` connections (the
    orders validated and serialised beforehand)."""
    batches = [
        [order_json(o) for o in sorted(orders[i : i + batch], key=lambda o: o.order_uid)]
        for i in range(0, len(orders), batch)
    ]
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    try:

        async def one(chunk: Sequence[bytes]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await repository.upsert_orders(conn, chunk)

        began = time.perf_counter()
        await asyncio.gather(*(one(b) for b in batches))
        return len(orders) / (time.perf_counter() - began)
    finally:
        await pool.close()


class OrderIngest:
    name = "orders-ingest"

    async def run(self, ctx: Context) -> Sequence[Row]:
        await upgrade(ctx.dsn)
        batch = OrderSettings().order_batch_size
        partitions = Settings().kafka_partitions
        topic = f"bench-orders-{ctx.run_id}"
        env = {
            **ctx.service_env(),
            "KAFKA_BROKERS": ctx.brokers,
            "KAFKA_IDEMPOTENCE": str(ctx.idempotence).lower(),
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": f"bench-{ctx.run_id}",
        }
        port = free_port()
        argv = [keel_bin(), "serve", "orders", "--port", str(port)]
        figures, limit = [], []
        async with service(argv, env, ctx.logdir, "keel-serve-orders-ingest", port):
            for run in range(ctx.cfg.runs):
                prefix = f"i{ctx.run_id}r{run}x"
                await produce(ctx.brokers, topic, fake_orders(prefix, ORDERS, seed=run))
                rate = await ingest_rate(ctx.dsn, prefix, ORDERS)
                figures.append(
                    Sample(rate, f"KAFKA_BROKERS=<private> keel serve orders; {ORDERS:,} orders produced")
                )
        for run in range(ctx.cfg.runs):
            prefix = f"d{ctx.run_id}r{run}x"
            orders = [Order.model_validate(o) for o in fake_orders(prefix, ORDERS, seed=run)]
            rate = await driver_rate(ctx.dsn, orders, batch, partitions)
            limit.append(
                Sample(
                    rate,
                    f"repository.upsert_orders over asyncpg, batches of {batch}, {partitions} connections",
                )
            )
        return [
            Row(
                "order ingest broker → 4 tables vs the same upserts from a bare driver loop",
                median(figures),
                median(limit),
                "orders/s",
                TARGET_RATIO,
                note="limit is not pgbench (it cannot build the batch's JSON parameter); see bench/workloads/ingest.py",
            )
        ]
