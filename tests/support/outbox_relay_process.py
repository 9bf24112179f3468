"""A relay in a process of its own, for tests that kill it: `python -m tests.support.outbox_relay_process
DSN BROKERS SHARDS BATCH [CONCURRENCY]`. With KEEL_CRASH_POINTS=outbox.after_send it dies like
`kill -9` right after the broker acked its first batch, before that batch's rows are deleted. With
CONCURRENCY (default 1) batches in flight, up to that many batches may have reached the broker."""

from __future__ import annotations

import asyncio
import sys

from keel.core.bus.kafka import KafkaBus
from keel.core.db import Database
from keel.core.outbox import OutboxRelay, RelayOptions
from tests.support.servers import idempotent_producers


async def main(dsn: str, brokers: str, shards: int, batch_size: int, concurrency: int) -> None:
    db = Database.connect(dsn, pool_size=2)
    bus = KafkaBus(brokers.split(","), idempotence=idempotent_producers())
    producer = bus.producer()
    await producer.start()
    options = RelayOptions(shards, batch_size=batch_size, concurrency=concurrency)
    relay = OutboxRelay(db, producer, options, name="relay-subprocess")
    try:
        await relay.run()
    finally:
        await producer.stop()
        await bus.close()
        await db.dispose()


if __name__ == "__main__":
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), concurrency))
