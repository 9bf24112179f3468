"""A consumer process for the crash test: it runs a runner until KEEL_CRASH_POINTS kills it.

Run as `python -m tests.integration.consumer.crash_child BROKER DSN TOPIC GROUP DLQ_TOPIC`."""

from __future__ import annotations

import asyncio
import sys

from keel.core.bus.kafka import KafkaBus
from keel.core.consumer import ConsumerRunner, Transactional
from keel.core.db import Database
from tests.integration.consumer.script import insert_effect
from tests.support.servers import idempotent_producers

# Short, so the group does not wait long for this member after it is killed without leaving.
SESSION_TIMEOUT_MS = 2000


def build_runner(bus: KafkaBus, db: Database, topic: str, group: str, dlq_topic: str) -> ConsumerRunner:
    return ConsumerRunner(
        bus,
        group_id=group,
        topics=[topic],
        wire="envelope",
        handler=Transactional(insert_effect),
        db=db,
        dlq_topic=dlq_topic,
    )


async def main(broker: str, dsn: str, topic: str, group: str, dlq_topic: str) -> None:
    bus = KafkaBus(
        [broker],
        idempotence=idempotent_producers(),
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=300,
    )
    db = Database.connect(dsn, pool_size=2)
    try:
        await build_runner(bus, db, topic, group, dlq_topic).run()
    finally:
        await bus.close()
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
