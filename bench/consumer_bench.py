"""Consumer runner throughput: events applied per second, inbox included, per handler kind and bus.

Per-message transactional handlers commit one transaction per event (partitions in parallel); the
batch handler commits one per fetch. Offsets are committed once per fetch either way (committing
per message caps at ~3k msg/s, DESIGN.md). Uses a scratch database on the server of --dsn and,
for Kafka, a private Tansu broker unless --brokers names one.

Run: .venv/bin/python -m bench.consumer_bench [--events 20000] [--kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack

import asyncpg
from tests.support import servers

from keel.core.bus import Bus
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.memory import MemoryBus
from keel.core.consumer import Batch, ConsumerRunner, Handler, Transactional
from keel.core.db import Database, UnitOfWork, libpq_dsn
from keel.core.events import Event, encode
from keel.core.schema import upgrade


async def effect(event: Event, uow: UnitOfWork) -> None:
    await (await uow.raw()).execute("INSERT INTO bench_effects (id) VALUES ($1)", event.payload["n"])


async def effects(events: Sequence[Event], uow: UnitOfWork) -> None:
    conn = await uow.raw()
    await conn.executemany("INSERT INTO bench_effects (id) VALUES ($1)", [(e.payload["n"],) for e in events])


async def measure(bus: Bus, db: Database, handler: Handler, events: int) -> float:
    topic, group = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics([topic])
    producer = bus.producer()
    await producer.start()
    records = [
        encode(Event("bench.happened", {"n": n}, key=f"k{n % 64}"), topic, "envelope") for n in range(events)
    ]
    for start in range(0, events, 5000):
        await producer.send_many(records[start : start + 5000])
    await producer.stop()
    async with db.connection() as conn:
        await conn.execute("TRUNCATE bench_effects")
    runner = ConsumerRunner(
        bus, group_id=group, topics=[topic], wire="envelope", handler=handler, db=db, dlq_topic=f"{topic}.dlq"
    )
    task = asyncio.create_task(runner.run())
    began: float | None = None
    first = 0
    while True:
        async with db.connection() as conn:
            done = int(await conn.fetchval("SELECT count(*) FROM bench_effects"))
        if done and began is None:
            began, first = time.perf_counter(), done  # from the first effect: the group join is not timed
        if done >= events:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    await runner.stop()
    await task
    return (events - first) / elapsed if elapsed else float("inf")


async def main(args: argparse.Namespace) -> None:
    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(libpq_dsn(args.dsn))
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = libpq_dsn(args.dsn).rsplit("/", 1)[0] + f"/{name}"
    db = Database.connect(dsn, pool_size=10)
    try:
        await upgrade(dsn)
        async with db.connection() as conn:
            await conn.execute("CREATE UNLOGGED TABLE bench_effects (id bigint NOT NULL)")
        with ExitStack() as stack:
            buses: list[tuple[str, Bus]] = [("memory", MemoryBus(6))]
            if args.kafka or args.brokers:
                brokers = (
                    args.brokers
                    or f"127.0.0.1:{stack.enter_context(servers.running(servers.kafka_broker())).port}"
                )
                buses.append(
                    ("kafka", KafkaBus(brokers.split(","), idempotence=servers.idempotent_producers()))
                )
            for bus_name, bus in buses:
                for kind, handler in (("per-message", Transactional(effect)), ("batch", Batch(effects))):
                    count = args.events if kind == "batch" else args.events // 4
                    rate = await measure(bus, db, handler, count)
                    print(
                        f"{bus_name:7} {kind:12} {count:7} events  {rate:9,.0f} events/s  (limit: ~3k/s if offsets were committed per message)"
                    )
                await bus.close()
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--dsn", default=os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--kafka", action="store_true", help="also measure on a private Tansu broker")
    parser.add_argument("--brokers", default=None)
    asyncio.run(main(parser.parse_args()))
