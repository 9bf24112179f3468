"""The order service's ingest consumer in processes of their own, for tests that `kill -9` them.

`python -m tests.chaos.orders_child` is a zygote: it imports the heavy libraries once (seconds on a
busy machine), then forks one consumer per request, so each restart costs a fork rather than an
interpreter start. A consumer runs the real wiring (`build_app` with the orders spec, no routes)
until SIGTERM or a crash point ends it; keel is imported only after the fork, so each consumer reads
its own KEEL_CRASH_POINTS. Protocol, one line each way:

    spawn <log file> <crash points, or -> <OrderSettings as JSON>   →  <pid>
    wait <pid>                                                       →  <exit code, -9 when killed>
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback

# Preloaded in the zygote; none of them reads KEEL_CRASH_POINTS.
import aiokafka  # noqa: F401
import alembic.command  # noqa: F401
import asyncpg  # noqa: F401
import fastapi  # noqa: F401
import pydantic_settings  # noqa: F401
import redis.asyncio  # noqa: F401
import sqlalchemy.ext.asyncio  # noqa: F401
import structlog  # noqa: F401

from tests.support.servers import idempotent_producers

# Short, so the group does not wait long for a member that was killed without leaving.
SESSION_TIMEOUT_MS = 2000


async def consume(settings_json: str) -> None:
    from keel.core import infra as infra_module
    from keel.core.bus import Bus
    from keel.core.bus.kafka import KafkaBus
    from keel.core.logging import setup_logging
    from keel.core.runtime import build_app
    from keel.core.settings import Settings
    from keel.orders.settings import OrderSettings
    from keel.orders.spec import SPEC

    def quick_join_bus(settings: Settings) -> Bus:
        return KafkaBus(
            settings.kafka_brokers,
            idempotence=idempotent_producers(),
            partitions=settings.kafka_partitions,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=300,
        )

    infra_module.build_bus = quick_join_bus
    settings = OrderSettings.model_validate_json(settings_json)
    setup_logging(settings.log_level, json=False)
    app = build_app([SPEC], settings, serve_routes=False)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.router.lifespan_context(app):
        await stop.wait()


def spawn(log: str, crash_points: str, settings_json: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ["KEEL_CRASH_POINTS"] = "" if crash_points == "-" else crash_points
        print(f"--- consumer {os.getpid()}, crash points {crash_points}", flush=True)
        asyncio.run(consume(settings_json))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def serve() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, rest = line.rstrip("\n").partition(" ")
        if command == "spawn":
            log, crash_points, settings_json = rest.split(" ", 2)
            print(spawn(log, crash_points, settings_json), flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(rest), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)
        else:
            print(f"unknown command {command!r}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    serve()
