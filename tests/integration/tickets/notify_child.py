"""The tickets notifications consumer in a process of its own, run until KEEL_CRASH_POINTS kills it.

Run as `python -m tests.integration.tickets.notify_child BROKER DSN TOPIC GROUP`."""

from __future__ import annotations

import asyncio
import sys

from keel.core.bus.kafka import KafkaBus
from keel.core.consumer import ConsumerRunner
from keel.core.db import Database
from keel.tickets.handlers import NOTIFICATIONS
from tests.support.servers import idempotent_producers

# Short, so the group does not wait long for this member after it is killed without leaving.
SESSION_TIMEOUT_MS = 2000


def build_bus(broker: str) -> KafkaBus:
    return KafkaBus(
        [broker],
        idempotence=idempotent_producers(),
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=300,
    )


def build_runner(bus: KafkaBus, db: Database, topic: str, group: str) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=NOTIFICATIONS,
        db=db,
        dlq_topic=f"{topic}.dlq",
    )


async def main(broker: str, dsn: str, topic: str, group: str) -> None:
    bus = build_bus(broker)
    db = Database.connect(dsn, pool_size=2)
    try:
        await build_runner(bus, db, topic, group).run()
    finally:
        await bus.close()
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
