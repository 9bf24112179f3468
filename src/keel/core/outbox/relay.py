"""The outbox relay: publishes committed outbox rows to the bus and deletes them after the ack.

Several relays may run against one database. Each batch is one transaction that holds the advisory
locks of the shards it publishes, so a shard (hence a key) is published by one relay at a time and
in id order; rows are deleted only after the broker acknowledged them, in the claim's transaction. A
crash between the ack and that commit republishes the batch: at least once, never lost (consumers
dedupe by event id). There is no high-water mark: a row whose transaction commits after higher ids
were published is still in the table, and the next batch takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from keel.core.bus.message import OutgoingMessage
from keel.core.bus.port import Producer
from keel.core.db import Database
from keel.core.faults import crash_point
from keel.core.metrics import OUTBOX_LAG, OUTBOX_PENDING, OUTBOX_PUBLISHED
from keel.core.outbox import sql
from keel.core.outbox.wakeup import Listener
from keel.core.outbox.writer import load_headers

if TYPE_CHECKING:
    from keel.core.settings import Settings

log = logging.getLogger("keel.outbox")

PENDING_COUNT_CAP = 1_000_000
# The count reads every pending row (a sequential scan is its cheapest plan), so a backlog this large,
# as after an outage, is counted once every RECOUNT_EVERY reports while its age is read every time.
LARGE_BACKLOG = 100_000
RECOUNT_EVERY = 10


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    # Age of the oldest unpublished row; 0 when there is none.
    lag_s: float


def to_message(row: asyncpg.Record) -> OutgoingMessage:
    """The record of one claimed row (`sql.RECORD_COLUMNS`): the value as the claim built it around the
    payload text (never parsed nor encoded again here: that was most of the relay's own CPU), so
    consumers decode the same event `encode` makes, with the whitespace of jsonb's text form."""
    raw_key = row["key"]
    key = raw_key.encode() if raw_key is not None else None
    headers = load_headers(row["headers"])
    if row["wire"] == "bare":
        headers = (
            ("event-id", row["event_id"].encode()),
            ("event-type", row["event_type"].encode()),
            ("created-at", row["created"].encode()),
            *headers,
        )
    return OutgoingMessage(row["topic"], row["value"], key, headers)


async def outbox_stats(db: Database, shards: int, *, count_up_to: int = PENDING_COUNT_CAP) -> OutboxStats:
    """How many rows wait (counted up to `count_up_to`; 0 skips the count) and how old the oldest is."""
    async with db.unit_of_work() as uow:
        conn = await uow.raw()
        row = await conn.fetchrow(sql.STATS, shards, count_up_to)
    assert row is not None
    lag = row["lag_s"]
    return OutboxStats(pending=int(row["pending"]), lag_s=max(0.0, float(lag)) if lag is not None else 0.0)


def counts_this_report(last_pending: int, report: int) -> bool:
    """Whether the `report`-th backlog report (from 0) counts the pending rows: always while the last
    count was under LARGE_BACKLOG, else once every RECOUNT_EVERY reports."""
    return last_pending < LARGE_BACKLOG or report % RECOUNT_EVERY == 0


@dataclass(frozen=True, slots=True)
class RelayOptions:
    """How a relay claims and publishes; `from_settings` for the process's own settings."""

    shards: int
    batch_size: int = 1_000
    poll_interval_s: float = 0.05
    # Shards one relay locks at a time (default: half of them, at least one), so replicas share.
    max_shards: int | None = None
    send_timeout_s: float = 30.0
    backoff_base_s: float = 0.1
    backoff_max_s: float = 5.0
    stats_interval_s: float = 1.0
    listen: bool = True
    concurrency: int = 2
    linger_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RelayOptions:
        values: dict[str, Any] = {
            "shards": settings.outbox_shards,
            "batch_size": settings.outbox_batch_size,
            "poll_interval_s": settings.outbox_poll_interval_s,
            "linger_s": settings.outbox_linger_s,
            # A send waits KAFKA_TIMEOUT_S for acks, then as long again to drop what it holds.
            "send_timeout_s": 2 * settings.kafka_timeout_s,
        }
        return cls(**{**values, **overrides})


class OutboxRelay:
    """A background worker (`run()` until `stop()`): publishes the outbox in batches.

    `max_shards` caps the shards one batch locks (default: half of them, at least one), so that a
    second relay, or this relay's second batch in flight (`concurrency`), finds shards free and the
    two share the backlog instead of taking turns."""

    def __init__(
        self, db: Database, producer: Producer, options: RelayOptions, *, name: str = "outbox-relay"
    ) -> None:
        o = options
        shards, batch_size, concurrency = o.shards, o.batch_size, o.concurrency
        poll_interval_s, max_shards, send_timeout_s = o.poll_interval_s, o.max_shards, o.send_timeout_s
        backoff_base_s, backoff_max_s, stats_interval_s = (
            o.backoff_base_s,
            o.backoff_max_s,
            o.stats_interval_s,
        )
        listen, linger_s = o.listen, o.linger_s
        if shards < 1 or batch_size < 1 or concurrency < 1:
            raise ValueError("shards, batch_size and concurrency must be >= 1")
        self.name = name
        self._db = db
        self._producer = producer
        self._shards = shards
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._max_shards = max_shards or max(1, math.ceil(shards / 2))
        self._send_timeout_s = send_timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._stats_interval_s = stats_interval_s
        # Behind a pooler with no direct DSN to listen on, polling alone finds new rows.
        self._listener = Listener(db, self.notify) if listen and db.listen_dsn else None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failures = 0
        self._failing_since: float | None = None
        self._recovered_at = -math.inf
        self._concurrency = concurrency
        # After a batch that drained the shards it locked, wait this long before the next claim instead
        # of chasing every commit: under a steady write rate each claim then carries tens of rows
        # rather than a few, and the transactions per event (the relay's, and each consumer's
        # downstream) fall accordingly. A batch that may have left rows behind is followed at once.
        self._linger_s = linger_s
        self._waiting = 0
        self._start_lock = asyncio.Lock()
        self._started = False
        # Events this relay has published (acked and deleted); for tests, logs and benchmarks.
        self.published = 0
        self._pending = 0  # the last count of the backlog

    @property
    def idle(self) -> bool:
        """Waiting for new rows (not publishing, not backing off)."""
        return self._waiting == self._concurrency

    @property
    def listening(self) -> bool:
        """Its LISTEN connection is up (otherwise it polls only)."""
        return self._listener is not None and self._listener.listening

    @property
    def consecutive_failures(self) -> int:
        """Failed attempts since the last batch that went through (0 when healthy)."""
        return self._failures

    def notify(self) -> None:
        """New rows were committed: publish now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Finish the batch in flight (its rows get deleted), then return from `run()`."""
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        self._stopped.clear()
        await self._warn_stranded()
        stats = asyncio.create_task(self._report_stats(), name=f"{self.name}:stats")
        try:
            async with asyncio.TaskGroup() as loops:
                for n in range(self._concurrency):
                    loops.create_task(self._publish_loop(), name=f"{self.name}:{n}")
        finally:
            stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats
            if self._listener is not None:
                await self._listener.close()

    async def _publish_loop(self) -> None:
        """One of `concurrency` loops: while one batch waits for the broker's acks, another is claimed
        and sent. Their batches hold different shards (advisory locks), so per-key order holds."""
        while not self._stopped.is_set():
            self._wake.clear()
            began = time.monotonic()
            # The whole attempt is bounded too, not only the send: an attempt stuck anywhere else (a
            # claim, a producer start) is cancelled, its transaction rolled back, and retried.
            attempt = asyncio.timeout(2 * self._send_timeout_s)
            try:
                async with attempt:
                    if self._failures or not self._started:
                        async with self._start_lock:
                            # Idempotent; also recovers a producer whose start failed while the broker was away.
                            await self._producer.start()
                        self._started = True
                    count, drained = await self._publish_batch()
            except Exception as exc:
                if attempt.expired():
                    # Where it was stuck is in the traceback: logged in full, it names the call to fix.
                    log.warning("outbox relay %s: an attempt was cut off", self.name, exc_info=exc)
                # Broker or database away: the rows stay unpublished; retry with backoff.
                await self._pause(self._on_failure(exc, began), self._stopped)
                continue
            if count:
                self._on_success(began)
                if drained and self._linger_s:
                    await self._pause(self._linger_s, self._stopped)
            else:
                # Nothing claimed is no sign the broker is back: the other loop may hold the rows.
                await self._wait_for_rows()

    async def publish_batch(self) -> int:
        """Claim, publish and delete one batch; the number of events published (0 when idle).

        Raises when the broker or the database fails; nothing is then deleted."""
        count, _ = await self._publish_batch()
        return count

    async def _publish_batch(self) -> tuple[int, bool]:
        """`publish_batch`, and whether the claim drained every shard it locked: no shard gave its
        full share of the batch (one that did may hold more rows, as may a batch that came out full).
        Only then does the relay linger; a backlog, even on one shard, is followed at once."""
        order = random.sample(range(self._shards), self._shards)
        async with self._db.unit_of_work() as uow:
            conn = await uow.raw()
            rows = await conn.fetch(sql.CLAIM, order, sql.LOCK_CLASS, self._max_shards, self._batch_size)
            if not rows:
                return 0, True
            messages = [to_message(row) for row in rows]
            async with asyncio.timeout(self._send_timeout_s):
                await self._producer.send_many(messages)
            # Acked but not yet deleted: a crash here republishes this batch (a duplicate, not a loss).
            crash_point("outbox.after_send")
            await conn.execute(sql.DELETE_PUBLISHED, [row["id"] for row in rows])
            await uow.commit()
        for topic, count in Counter(m.topic for m in messages).items():
            OUTBOX_PUBLISHED.labels(topic).inc(count)
        self.published += len(rows)
        per_shard = Counter(row["shard"] for row in rows)
        share = -(-self._batch_size // len(per_shard))  # the claim's per-shard limit, rounded up
        drained = len(rows) < self._batch_size and max(per_shard.values()) < share
        return len(rows), drained

    async def stats(self, *, count: bool = True) -> OutboxStats:
        """Backlog size and age now; also sets the `outbox_*` gauges. Without `count`, the size is the
        last one counted and only the age is read."""
        current = await outbox_stats(self._db, self._shards, count_up_to=PENDING_COUNT_CAP if count else 0)
        if count:
            self._pending = current.pending
        else:
            current = OutboxStats(self._pending, current.lag_s)
        OUTBOX_PENDING.set(current.pending)
        OUTBOX_LAG.set(current.lag_s)
        return current

    async def _wait_for_rows(self) -> None:
        if self._listener is not None:
            await self._listener.ensure()
        self._waiting += 1
        try:
            await self._pause(self._poll_interval_s, self._wake)
        finally:
            self._waiting -= 1

    async def _pause(self, seconds: float, until: asyncio.Event) -> None:
        """Sleep `seconds` or until `until` is set. A backoff waits on stop only: new rows arriving
        during an outage must not turn the backoff into a hot loop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await until.wait()

    # With several loops, an attempt that began before the other loop's recovery (or outage) says
    # nothing new about the broker: it neither opens nor closes an outage, so each is logged once.

    def _on_failure(self, exc: Exception, began: float) -> float:
        if self._failing_since is None and began < self._recovered_at:
            log.debug("outbox relay %s: an attempt from before the recovery failed: %r", self.name, exc)
            return self._backoff_base_s
        self._failures += 1
        if self._failing_since is None:
            # Once per outage, not once per retry: the lag gauge tells how long it lasts.
            self._failing_since = time.monotonic()
            log.warning("outbox relay %s cannot publish, retrying with backoff: %r", self.name, exc)
        else:
            log.debug("outbox relay %s still failing (attempt %d): %r", self.name, self._failures, exc)
        delay = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** min(self._failures - 1, 20))
        # Jitter, so relays that lost the broker together do not come back in lockstep.
        return delay * random.uniform(0.5, 1.0)

    def _on_success(self, began: float) -> None:
        if self._failing_since is not None:
            if began < self._failing_since:
                return
            self._recovered_at = time.monotonic()
            log.warning(
                "outbox relay %s publishing again after %.1fs and %d failed attempts",
                self.name,
                time.monotonic() - self._failing_since,
                self._failures,
            )
        self._failing_since = None
        self._failures = 0

    async def _report_stats(self) -> None:
        report = 0
        while True:
            try:
                await self.stats(count=counts_this_report(self._pending, report))
            except Exception as exc:
                # The gauges keep their last value; the publish loop reports the outage itself.
                log.debug("outbox relay %s could not read its backlog: %r", self.name, exc)
            report += 1
            await asyncio.sleep(self._stats_interval_s)

    async def _warn_stranded(self) -> None:
        try:
            async with self._db.unit_of_work() as uow:
                conn = await uow.raw()
                stranded = await conn.fetchval(sql.STRANDED, self._shards)
        except Exception as exc:
            log.debug("outbox relay %s could not check for stranded rows: %r", self.name, exc)
            return
        if stranded:
            log.error(
                "%s unpublished outbox rows are in shards >= %d, which no relay serves: "
                "OUTBOX_SHARDS must not shrink while rows are pending",
                stranded,
                self._shards,
            )
