"""Saturation figures: requests in flight, the database and Redis pools, event-loop lag, and the
process figures of every worker under `keel serve --workers N`.

Nothing here runs per request: the edge keeps a plain count of the requests in flight, and a sampler
copies that count and the pools' state into gauges when /metrics is scraped and once a second. The
second-by-second copy is what makes the figures right under several worker processes, where the
worker answering a scrape cannot read the other workers' pools: each writes its own into the shared
store (PROMETHEUS_MULTIPROC_DIR) and the scrape sums them (`livesum`). The same tick measures how late
the event loop wakes it (its lag: a blocking call or a CPU-bound burst delays every request as much).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from keel.core.db import Database
from keel.core.redis_topology import RedisClient

log = logging.getLogger("keel.saturation")

TICK_S = 1.0
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being handled (probes and scrapes left out)",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "db_pool_size", "Connections the database pool may open (DB_POOL_SIZE)", multiprocess_mode="livesum"
)
DB_POOL_CONNECTIONS = Gauge(
    "db_pool_connections",
    "Database connections open, by state: in_use (checked out) or idle (in the pool)",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "db_pool_waiting",
    "Callers waiting for a database connection (the pool is exhausted)",
    multiprocess_mode="livesum",
)
REDIS_POOL_CONNECTIONS = Gauge(
    "redis_pool_connections",
    "Redis connections open, by state: in_use or available (single server and Sentinel primary)",
    ["state"],
    multiprocess_mode="livesum",
)
REDIS_POOL_MAX = Gauge(
    "redis_pool_max_connections", "Connections the Redis pool may open", multiprocess_mode="livesum"
)
EVENT_LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    f"How late the event loop ran a timer due every {TICK_S:g} s (blocking calls, CPU-bound bursts)",
    buckets=LAG_BUCKETS,
)
EVENT_LOOP_LAG_LAST = Gauge(
    "event_loop_lag_last_seconds", "The event-loop lag of the last tick", multiprocess_mode="livemax"
)

# Under several worker processes prometheus-client keeps no process_* figures (its ProcessCollector
# sits in the default registry, which the multiprocess scrape does not read): each worker writes its
# own into the shared store, summed by the scrape. Not registered: in one process the default
# registry's collector already exposes these names.
_RSS = Gauge(
    "process_resident_memory_bytes",
    "Resident memory of every worker, summed",
    registry=None,
    multiprocess_mode="livesum",
)
_VMS = Gauge(
    "process_virtual_memory_bytes",
    "Virtual memory of every worker, summed",
    registry=None,
    multiprocess_mode="livesum",
)
_FDS = Gauge(
    "process_open_fds",
    "Open file descriptors of every worker, summed",
    registry=None,
    multiprocess_mode="livesum",
)
_WORKERS = Gauge("process_workers", "Worker processes alive", registry=None, multiprocess_mode="livesum")
_PROCESS_GAUGES = {
    "process_resident_memory_bytes": _RSS,
    "process_virtual_memory_bytes": _VMS,
    "process_open_fds": _FDS,
}
# A counter: the CPU time of workers that exited stays counted, so the total never goes back.
_PROCESS_CPU = Counter("process_cpu_seconds", "CPU time of every worker, summed", registry=None)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class InFlight:
    """The edge's count of requests being handled: a plain integer, read by the sampler."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class SaturationSampler:
    """Copies the live figures of one process into the gauges: at each scrape (`sample`) and every
    `tick_s` (with the event-loop lag, measured on that tick)."""

    def __init__(
        self,
        service: str,
        in_flight: InFlight,
        *,
        db: Database | None = None,
        redis: RedisClient | None = None,
        tick_s: float = TICK_S,
    ) -> None:
        self.in_flight = in_flight
        self.db = db
        self.redis_pool = _single_pool(redis)
        self.tick_s = tick_s
        self._in_flight_gauge = HTTP_IN_FLIGHT.labels(service)
        self._process = _ProcessFigures() if multiprocess() else None
        if redis is not None and self.redis_pool is None:
            log.info("Redis pool figures are left out: REDIS_URL is a Cluster (a pool per node)")

    def sample(self) -> None:
        self._in_flight_gauge.set(self.in_flight.count)
        if self.db is not None:
            size, in_use, idle, waiting = db_pool_state(self.db)
            DB_POOL_SIZE.set(size)
            DB_POOL_CONNECTIONS.labels("in_use").set(in_use)
            DB_POOL_CONNECTIONS.labels("idle").set(idle)
            DB_POOL_WAITING.set(waiting)
        if self.redis_pool is not None:
            in_use, available, most = redis_pool_state(self.redis_pool)
            REDIS_POOL_CONNECTIONS.labels("in_use").set(in_use)
            REDIS_POOL_CONNECTIONS.labels("available").set(available)
            REDIS_POOL_MAX.set(most)
        if self._process is not None:
            self._process.sample()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick_s
            await asyncio.sleep(self.tick_s)
            lag = max(0.0, loop.time() - due)
            EVENT_LOOP_LAG.observe(lag)
            EVENT_LOOP_LAG_LAST.set(lag)
            try:
                self.sample()
            except Exception:  # a figure we cannot read must not end the sampling of the others
                log.exception("saturation sample failed")


@asynccontextmanager
async def sampling(sampler: SaturationSampler) -> AsyncIterator[SaturationSampler]:
    task = asyncio.create_task(sampler.run(), name="saturation-sampler")
    try:
        yield sampler
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def db_pool_state(db: Database) -> tuple[int, int, int, int]:
    """(size, in use, idle, waiting) of the engine's pool, read from SQLAlchemy's QueuePool."""
    pool: Any = db.engine.sync_engine.pool
    size = pool.size() if callable(getattr(pool, "size", None)) else 0
    in_use = pool.checkedout() if callable(getattr(pool, "checkedout", None)) else 0
    idle = pool.checkedin() if callable(getattr(pool, "checkedin", None)) else 0
    return size, in_use, idle, _waiters(pool)


def _waiters(pool: Any) -> int:
    """Callers blocked in the pool's asyncio queue (SQLAlchemy's AsyncAdaptedQueue; the queue is made
    on first use). No public figure exists for it; 0 when the internals differ."""
    queue = getattr(pool, "_pool", None)
    inner = getattr(queue, "__dict__", {}).get("_queue")
    getters = getattr(inner, "_getters", ())
    return sum(1 for waiter in getters if not waiter.done())


def _single_pool(redis: RedisClient | None) -> Any:
    """The connection pool of a single-server or Sentinel-primary client; None for a Cluster (a pool
    per node, behind the client) or no Redis."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None or not hasattr(pool, "_in_use_connections"):
        return None
    return pool


def redis_pool_state(pool: Any) -> tuple[int, int, int]:
    """(in use, available, max) of a redis-py asyncio ConnectionPool."""
    return (
        len(pool._in_use_connections),
        len(pool._available_connections),
        int(getattr(pool, "max_connections", 0) or 0),
    )


class _ProcessFigures:
    """This worker's process_* figures (read by prometheus-client's ProcessCollector from /proc) into
    the shared store, where the scrape sums every worker's."""

    def __init__(self) -> None:
        self._collector = ProcessCollector(registry=None)
        self._cpu_seen = 0.0
        _WORKERS.set(1)

    def sample(self) -> None:
        for family in self._collector.collect():
            value = family.samples[0].value if family.samples else None
            if value is None:
                continue
            if family.name == "process_cpu_seconds":
                _PROCESS_CPU.inc(max(0.0, value - self._cpu_seen))
                self._cpu_seen = max(self._cpu_seen, value)
            elif (gauge := _PROCESS_GAUGES.get(family.name)) is not None:
                gauge.set(value)
