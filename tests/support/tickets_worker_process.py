"""One tickets background worker in a process of its own, for tests that kill it and start it again:
`python -m tests.support.tickets_worker_process relay|consumer`, configured from the environment
(POSTGRES_DSN, KAFKA_BROKERS, KAFKA_IDEMPOTENCE, KEEL_DATA_DIR ...). It starts working when it reads
GO on stdin, so a parent can spawn it ahead of need.

`relay` runs the outbox relay; `consumer` runs the workers the tickets service wires (its
notifications consumer, whatever handler that is). Once it printed READY, SIGTERM stops the worker cleanly (exit 0); with
KEEL_CRASH_POINTS set the process dies at that point instead (exit 137, like `kill -9`). The
consumer's group session is short, so the group gives a killed member's partitions away in seconds.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import AsyncExitStack

from keel.core.bus.kafka import KafkaBus
from keel.core.db import Database
from keel.core.infra import Infra
from keel.core.runtime import start_relay
from keel.core.service import Worker
from keel.core.settings import Settings
from keel.core.supervisor import Supervisor
from keel.tickets.spec import SPEC

SESSION_TIMEOUT_MS = 4000
HEARTBEAT_INTERVAL_MS = 500
READY = "tickets worker ready"
GO = b"go\n"


async def _workers(kind: str, infra: Infra, stack: AsyncExitStack) -> list[Worker]:
    if kind == "relay":
        return [await start_relay(infra, stack)]
    wiring = await SPEC.configured().wire(infra)
    for closer in wiring.closers:
        stack.push_async_callback(closer)
    return list(wiring.workers)


async def main(kind: str) -> None:
    settings = Settings()
    assert settings.postgres_dsn, "POSTGRES_DSN is required"
    bus = KafkaBus(
        settings.kafka_brokers,
        idempotence=settings.kafka_idempotence,
        partitions=settings.kafka_partitions,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(bus.close)
        db = Database.connect(settings.postgres_dsn, pool_size=4)
        stack.push_async_callback(db.dispose)
        infra = Infra(settings=settings, bus=bus, db=db)
        supervisor = Supervisor(await _workers(kind, infra, stack))
        supervisor.start()
        print(READY, flush=True)  # SIGTERM is handled from here on
        await stopping.wait()
        await supervisor.stop()


if __name__ == "__main__":
    if sys.argv[1:] not in (["relay"], ["consumer"]):
        raise SystemExit("usage: python -m tests.support.tickets_worker_process relay|consumer")
    # Warm start: imported, it waits for GO on stdin (EOF: the parent is gone, so is the need).
    if sys.stdin.buffer.readline() == GO:
        asyncio.run(main(sys.argv[1]))
