"""The consumer loop every service runs: fetch records, hand each partition's records to that
partition's worker, and commit how far the workers got — only ever past effects that are committed.
At-least-once delivery; the inbox turns redelivery into a no-op."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.core.bus.errors import BusError, CommitFailed, ConsumerStopped
from keel.core.bus.message import Message, TopicPartition
from keel.core.bus.port import Bus, Consumer
from keel.core.consumer.dlq import DeadLetters
from keel.core.consumer.handlers import Handler, Idempotent, IdempotentBatch
from keel.core.consumer.partition import PartitionWorker, Pipeline
from keel.core.consumer.retry import RetryPolicy
from keel.core.db import Database
from keel.core.events import WireFormat
from keel.core.faults import crash_point
from keel.core.logging import REPEATS
from keel.core.metrics import KAFKA_CONSUMER_LAG

if TYPE_CHECKING:
    from keel.core.settings import Settings

log = logging.getLogger("keel.core.consumer")
# After a failed lag read, the next try comes this soon rather than a whole interval later.
LAG_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """How a runner retries, fetches and commits; `from_settings` for the process's own settings."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = 500
    # Partitions handled at once (None: every partition owned).
    concurrency: int | None = None
    poll_timeout_s: float = 1.0
    commit_interval_s: float = 0.1
    revoke_timeout_s: float = 10.0
    stop_timeout_s: float = 10.0
    lag_interval_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ConsumerOptions:
        return cls(**{"retry": RetryPolicy.from_settings(settings), **overrides})


class ConsumerRunner:
    """One consumer group member running one handler; a `Worker` (`run()` until `stop()`).

    `run()` may be called again after it raised (the supervisor restarts it); after `stop()` the
    runner is done."""

    def __init__(
        self,
        bus: Bus,
        *,
        group_id: str,
        topics: Sequence[str],
        wire: WireFormat,
        handler: Handler,
        dlq_topic: str,
        db: Database | None = None,
        options: ConsumerOptions | None = None,
        name: str | None = None,
        inbox: str | None = None,
        default_event_type: str | None = None,
        dlq_bus: Bus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        o = options or ConsumerOptions()
        batch_size, concurrency = o.batch_size, o.concurrency
        if not isinstance(handler, Idempotent | IdempotentBatch) and db is None:
            raise ValueError("a transactional or batch handler needs a database for its inbox")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self.name = name or f"consumer:{group_id}"
        self.group_id = group_id
        self.topics = tuple(topics)
        self._bus = bus
        self._pipeline = Pipeline(
            name=self.name,
            group_id=group_id,
            wire=wire,
            handler=handler,
            db=db,
            inbox=inbox or group_id,
            default_type=default_event_type,
            retry=o.retry,
            rng=rng or random.Random(),  # jitter, not security
            # The dead-letter topic may live on another cluster; by default it is the source bus.
            dead_letters=DeadLetters(dlq_bus or bus, dlq_topic, group_id),
            batch_size=batch_size,
            slots=asyncio.Semaphore(concurrency) if concurrency else None,
        )
        self._poll_timeout_s = o.poll_timeout_s
        self._commit_interval_s = o.commit_interval_s
        self._revoke_timeout_s = o.revoke_timeout_s
        self._stop_timeout_s = o.stop_timeout_s
        self._lag_interval_s = o.lag_interval_s
        self._workers: dict[TopicPartition, PartitionWorker] = {}
        # Workers that did not stop in time at a revoke; they finish their record in hand alone.
        self._abandoned: set[PartitionWorker] = set()
        # Per partition: the offset after the last record whose effect is durable, and the last
        # offset committed. Offsets only move forward (see `_advance`).
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._stop_requested = asyncio.Event()
        self._finished: asyncio.Event | None = None
        self._consumer: Consumer | None = None
        self._lag_reported: set[TopicPartition] = set()
        # From a revoke until the next assignment: fetched records may belong to the old assignment.
        self._rebalancing = False

    # --- lifecycle ---

    async def run(self) -> None:
        if self._finished is not None and not self._finished.is_set():
            raise RuntimeError(f"{self.name} is already running")
        self._finished = asyncio.Event()
        self._done.clear()
        self._committed.clear()
        self._rebalancing = False
        consumer = self._bus.consumer(
            self.topics, self.group_id, on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._consumer = consumer
        try:
            await consumer.start()
            helpers = [
                asyncio.create_task(self._commit_loop(consumer), name=f"{self.name}:commit"),
                asyncio.create_task(self._lag_loop(consumer), name=f"{self.name}:lag"),
            ]
            try:
                await self._fetch_loop(consumer)
            finally:
                await self._stop_workers()
                for helper in helpers:
                    helper.cancel()
                await asyncio.wait(helpers)
                await self._commit(consumer)
        finally:
            await self._shut(consumer)

    async def stop(self) -> None:
        """Finish the records in hand, commit, and leave the group (bounded by stop_timeout_s)."""
        self._stop_requested.set()
        finished = self._finished
        if finished is None or finished.is_set():
            return
        try:
            await asyncio.wait_for(finished.wait(), self._stop_timeout_s + 5)
        except TimeoutError:
            log.warning("%s did not stop in time", self.name)

    async def _stop_workers(self) -> None:
        workers = [*self._workers.values(), *self._abandoned]
        self._workers.clear()
        self._abandoned.clear()
        finished = await asyncio.gather(*(w.stop(self._stop_timeout_s) for w in workers))
        late = [w.task for w, done in zip(workers, finished, strict=True) if not done]
        for task in late:
            log.warning(
                "%s: %s still busy at shutdown; cancelled (its record is redelivered)",
                self.name,
                task.get_name(),
            )
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _shut(self, consumer: Consumer) -> None:
        try:
            await consumer.stop()
        except BusError as exc:
            log.warning("%s: leaving the group failed: %r", self.name, exc)
        await self._pipeline.dead_letters.close()
        self._consumer = None
        for tp in self._lag_reported:
            _remove_lag(self.group_id, tp)
        self._lag_reported.clear()
        if self._finished is not None:
            self._finished.set()

    # --- fetching ---

    async def _fetch_loop(self, consumer: Consumer) -> None:
        failures = 0
        while not self._stop_requested.is_set():
            try:
                await self._fetch(consumer)
            except ConsumerStopped:
                if self._stop_requested.is_set():
                    return
                raise
            except Exception:
                # A fetch failure is the broker's, not a record's: log it and back off, never spin.
                failures += 1
                delay = self._pipeline.retry.delay(failures, self._pipeline.rng)
                log.exception("%s: fetch failed; retrying in %.2fs", self.name, delay, extra=REPEATS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), delay)
                continue
            failures = 0

    async def _fetch(self, consumer: Consumer) -> None:
        """Fetch and hand over the next records; give up at once when a stop is requested."""
        fetch = asyncio.ensure_future(self._fetch_and_dispatch(consumer))
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait((fetch, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not fetch.done():
                # Nothing is lost: records are taken from the consumer only when getmany returns.
                fetch.cancel()
                await asyncio.wait((fetch,))
        if not fetch.cancelled():
            fetch.result()

    async def _fetch_and_dispatch(self, consumer: Consumer) -> None:
        records = await consumer.getmany(self._poll_timeout_s, self._pipeline.batch_size)
        # No await between the fetch and the hand-over: no rebalance can slip in between and make
        # these records stale (positions restart from the committed offsets after a rebalance).
        self._dispatch(consumer, records)

    def _dispatch(self, consumer: Consumer, records: list[Message]) -> None:
        if not records or self._rebalancing:
            # Mid-rebalance records may be of the old assignment; the new one reads them again.
            return
        owned = consumer.assignment()
        by_tp: dict[TopicPartition, list[Message]] = {}
        for message in records:
            by_tp.setdefault(message.tp, []).append(message)
        for tp, messages in by_tp.items():
            if tp not in owned:
                continue  # revoked between the fetch and now; its new owner reads it again
            worker = self._workers.get(tp)
            if worker is None:
                worker = self._workers[tp] = PartitionWorker(tp, self._pipeline, consumer, self._advance)
            worker.add(messages)

    # --- offsets ---

    def _advance(self, tp: TopicPartition, offset: int) -> None:
        """A worker's effects up to `offset` are durable. Never step back: a record handled again
        after its partition came back to this member must not undo a further commit owed."""
        if offset > self._done.get(tp, -1):
            self._done[tp] = offset
            self._progress.set()

    async def _commit_loop(self, consumer: Consumer) -> None:
        # One commit per interval at most, covering everything done meanwhile: committing per
        # record would cap throughput at ~3k records/s.
        while True:
            await self._progress.wait()
            self._progress.clear()
            await self._commit(consumer)
            await asyncio.sleep(self._commit_interval_s)

    async def _commit(self, consumer: Consumer, only: set[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            pending = {
                tp: offset
                for tp, offset in self._done.items()
                if self._committed.get(tp) != offset and (only is None or tp in only)
            }
            if not pending:
                return
            # The window the inbox exists for: effects are committed, their offsets are not yet.
            crash_point("consumer.after_effect")
            try:
                await consumer.commit(pending)
            except CommitFailed as exc:
                lost = pending.keys() - consumer.assignment()
                for tp in lost:
                    self._done.pop(tp, None)
                    self._committed.pop(tp, None)
                log.warning(
                    "%s: commit refused after a rebalance (%s); the new owner redoes those records",
                    self.name,
                    exc,
                )
                if pending.keys() - lost:
                    self._progress.set()  # what is still ours goes with the next commit
                return
            except BusError as exc:
                log.warning("%s: offset commit failed (%r); retried with the next one", self.name, exc)
                self._progress.set()
                return
            self._committed.update(pending)

    # --- rebalances ---

    async def _on_revoke(self, partitions: set[TopicPartition]) -> None:
        """Let the revoked partitions' workers finish their record in hand (bounded), then commit
        what is done while the partitions are still ours."""
        self._rebalancing = True
        workers = [self._workers.pop(tp) for tp in partitions if tp in self._workers]
        finished = await asyncio.gather(*(w.stop(self._revoke_timeout_s) for w in workers))
        for worker, done in zip(workers, finished, strict=True):
            if not done:
                log.warning(
                    "%s: %s still busy %.1fs after its revoke; left to finish alone",
                    self.name,
                    worker.tp,
                    self._revoke_timeout_s,
                )
                self._abandoned.add(worker)
                worker.task.add_done_callback(functools.partial(self._forget_abandoned, worker))
        consumer = self._consumer
        if consumer is not None:
            await self._commit(consumer, only=partitions)
        for tp in partitions:
            # Whatever could not be committed now is not ours to commit later.
            self._done.pop(tp, None)
            self._committed.pop(tp, None)
            _remove_lag(self.group_id, tp)
            self._lag_reported.discard(tp)

    def _forget_abandoned(self, worker: PartitionWorker, _: object) -> None:
        self._abandoned.discard(worker)

    async def _on_assign(self, partitions: set[TopicPartition]) -> None:
        # Workers are made when records come; a worker of a partition that came back was stopped
        # at its revoke, so the new one starts from the committed offset like the consumer does.
        self._rebalancing = False

    # --- metrics ---

    async def _lag_loop(self, consumer: Consumer) -> None:
        while True:
            try:
                lags = await consumer.lag()
            except BusError as exc:
                # Often a partition whose leader is moving (or a topic just created): ask again soon
                # rather than leave the gauge missing or stale for a whole interval.
                log.debug("%s: lag unavailable: %r", self.name, exc)
                await asyncio.sleep(min(LAG_RETRY_S, self._lag_interval_s))
                continue
            else:
                for tp, lag in lags.items():
                    KAFKA_CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(lag)
                for tp in self._lag_reported - lags.keys():
                    _remove_lag(self.group_id, tp)
                self._lag_reported = set(lags)
            await asyncio.sleep(self._lag_interval_s)


def _remove_lag(group_id: str, tp: TopicPartition) -> None:
    with contextlib.suppress(KeyError):
        KAFKA_CONSUMER_LAG.remove(group_id, tp.topic, str(tp.partition))
