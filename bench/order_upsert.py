"""What the order ingest's batch statement costs each side: `keel.orders.repository.upsert_orders` over
batches of fake orders (new orders, then the same orders again as updates), in a scratch database of
the bench's PostgreSQL (BENCH_POSTGRES_DSN's, on this machine, or a private one), one connection. CPU per order of this process (the client: serialising and binding the batch) and of
the connection's server backend (psutil), and the wall time per batch, median over the rounds.

The served row (`BENCH_ONLY=orders-ingest`) puts the consumer, the broker and PostgreSQL on the same
2 cores; this tool shows which side a change to the statement moves.

Run: .venv/bin/python -m bench.order_upsert [--batch 500] [--rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import asyncpg
import psutil
from bench.config import BenchConfig
from bench.procs import postgres_server, scratch_database

from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import order_json, parse_order


async def measure(admin_dsn: str, batch: int, rounds: int) -> None:
    async with scratch_database(admin_dsn) as dsn:
        await measure_in(dsn, batch, rounds)


async def measure_in(dsn: str, batch: int, rounds: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))

        def server_cpu() -> float:
            times = backend.cpu_times()
            return times.user + times.system

        samples: list[tuple[float, float, float]] = []
        for n in range(rounds):
            rng = random.Random(n)
            orders = [parse_order(fake_order(rng, order_uid=f"r{n}x{i:06d}")) for i in range(batch)]
            for _ in range(2):  # insert, then update
                client, server, wall = time.process_time(), server_cpu(), time.perf_counter()
                # As OrderService.save does: the bodies it also hands the cache, then the statement.
                bodies = [order_json(o) for o in orders]
                async with conn.transaction():
                    await repository.upsert_orders(conn, bodies)
                samples.append(
                    (time.process_time() - client, server_cpu() - server, time.perf_counter() - wall)
                )
        print(f"upsert_orders, batches of {batch}, {rounds} rounds (insert, then update):")
        print(f"  client CPU per order  {statistics.median(s[0] for s in samples) / batch * 1e6:7.1f} µs")
        print(f"  server CPU per order  {statistics.median(s[1] for s in samples) / batch * 1e6:7.1f} µs")
        print(f"  wall per batch        {statistics.median(s[2] for s in samples) * 1e3:7.1f} ms")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with postgres_server(BenchConfig().admin_dsn) as admin:
        asyncio.run(measure(admin, args.batch, args.rounds))


if __name__ == "__main__":
    main()
