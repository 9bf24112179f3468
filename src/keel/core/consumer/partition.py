"""One partition's worker: applies its records strictly in order, retries the record at its head with
backoff (only this partition waits: the others have workers of their own), dead-letters what cannot
be handled, and reports how far it got so the runner can commit."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from keel.core.bus.message import Message, TopicPartition
from keel.core.bus.port import Consumer
from keel.core.consumer.dlq import DeadLetters, error_text
from keel.core.consumer.handlers import (
    Applied,
    Batch,
    Handler,
    IdempotentBatch,
    apply_batch,
    apply_one,
)
from keel.core.consumer.retry import RetryPolicy, is_transient
from keel.core.db import Database
from keel.core.events import Event, PoisonMessage, WireFormat, decode
from keel.core.logging import REPEATS
from keel.core.metrics import EVENTS_CONSUMED, JOB_DURATION
from keel.core.spans import process_batch, process_one

log = logging.getLogger("keel.core.consumer")

Outcome = Literal["ok", "retried", "dlq", "duplicate"]
Report = Callable[[TopicPartition, int], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """What every partition worker of one runner shares."""

    name: str
    group_id: str
    wire: WireFormat
    handler: Handler
    db: Database | None
    inbox: str
    default_type: str | None
    retry: RetryPolicy
    rng: random.Random
    dead_letters: DeadLetters
    batch_size: int
    # Caps the handler calls running at once across this runner's partitions (each holds a
    # database connection); None lets every owned partition run.
    slots: asyncio.Semaphore | None = None

    def count(self, topic: str, outcome: Outcome, n: int = 1) -> None:
        EVENTS_CONSUMED.labels(group=self.group_id, topic=topic, outcome=outcome).inc(n)

    async def timed(self, work: Awaitable[T]) -> T:
        async with self.slots or contextlib.nullcontext():
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await work
                outcome = "ok"
                return result
            finally:
                JOB_DURATION.labels(task=self.group_id, outcome=outcome).observe(
                    time.perf_counter() - started
                )


@dataclass(slots=True)
class Failure:
    """The record at the head of the queue failed before."""

    # Failed runs that count toward max_attempts (transient infrastructure errors do not).
    attempts: int = 0
    # Waits so far, for any reason: drives the backoff, so a long outage backs off to max_s.
    waits: int = 0
    error: BaseException | None = None
    # Attempts used up (or poison) and the dead-letter publish failed: only the publish remains.
    dead_letter_pending: bool = False


class PartitionWorker:
    def __init__(self, tp: TopicPartition, pipeline: Pipeline, consumer: Consumer, report: Report) -> None:
        self.tp = tp
        self._p = pipeline
        self._consumer = consumer
        self._report = report
        self._queue: deque[Message] = deque()
        handler = pipeline.handler
        # The urgency of queued records, when the handler takes the most urgent first; offsets handled
        # ahead of the queue's head (they are dropped, and committed, once the head reaches them).
        self._priority = handler.priority if isinstance(handler, IdempotentBatch) else None
        self._urgency: dict[int, float] = {}
        self._handled: set[int] = set()
        # Above this many queued records the partition is paused, so a slow handler bounds memory.
        lookahead = handler.lookahead if isinstance(handler, IdempotentBatch) and handler.priority else 0
        self._cap = max(2 * pipeline.batch_size, lookahead)
        self._paused = False
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._failure: Failure | None = None
        # After a batch failed, its records are redone one at a time so a bad one stands alone.
        self._singles = 0
        self.task = asyncio.create_task(self._run(), name=f"{pipeline.name}:{tp.topic}[{tp.partition}]")

    def add(self, messages: list[Message]) -> None:
        self._queue.extend(messages)
        self._wakeup.set()
        if not self._paused and len(self._queue) >= self._cap:
            self._consumer.pause({self.tp})
            self._paused = True

    async def stop(self, timeout_s: float) -> bool:
        """Finish the record in hand, then stop. False when it did not within `timeout_s`: it is then
        left to finish that record alone, and whatever it reports may be refused at commit."""
        self._stopping.set()
        self._wakeup.set()
        done, _ = await asyncio.wait((self.task,), timeout=timeout_s)
        return bool(done)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._step()
                self._resume_if_drained()
            except Exception:
                # Only a bug in this module gets here (handler errors are caught per record); the
                # partition must not stop for good, so log it loudly and try again after a while.
                log.exception("%s: worker of %s failed; retrying", self._p.name, self.tp)
                await self._wait(self._p.retry.max_s)

    async def _step(self) -> None:
        handler = self._p.handler
        if (
            isinstance(handler, Batch | IdempotentBatch)
            and self._failure is None
            and not self._singles
            and len(self._queue) > 1
        ):
            chunk = self._next_chunk()
            if await self._try_batch(handler, chunk):
                self._handled.update(m.offset for m in chunk)
                self._drop_handled()
                return
            self._singles = len(chunk)
        message = self._queue[0]
        if await self._handle(message):
            self._handled.add(message.offset)
            self._failure = None
            self._singles = max(0, self._singles - 1)
            self._drop_handled()
        else:
            await self._backoff()

    def _next_chunk(self) -> list[Message]:
        """The next batch: the queue's first records, or with a priority the most urgent ones among
        the next `lookahead` (in offset order)."""
        size, priority = self._p.batch_size, self._priority
        if priority is None:
            return list(itertools.islice(self._queue, size))
        window = [m for m in itertools.islice(self._queue, self._cap) if m.offset not in self._handled]
        if len(window) > size:
            window = sorted(window, key=lambda m: (self._urgency_of(m, priority), m.offset))[:size]
            window.sort(key=lambda m: m.offset)
        return window

    def _urgency_of(self, message: Message, priority: Callable[[Event], float]) -> float:
        urgency = self._urgency.get(message.offset)
        if urgency is None:
            p = self._p
            try:
                urgency = float(priority(decode(message, p.wire, default_type=p.default_type)))
            except Exception:
                urgency = math.inf  # undecodable or odd: handled (or dead-lettered) in its turn
            self._urgency[message.offset] = urgency
        return urgency

    def _drop_handled(self) -> None:
        """Drop the handled records at the head of the queue and report how far that got."""
        last: Message | None = None
        while self._queue and self._queue[0].offset in self._handled:
            last = self._queue.popleft()
            self._handled.discard(last.offset)
            self._urgency.pop(last.offset, None)
        if last is not None:
            self._report(self.tp, last.offset + 1)

    def _resume_if_drained(self) -> None:
        # A stopping worker no longer owns its partition; pausing or resuming it is not its call.
        if self._paused and len(self._queue) <= self._cap // 2 and not self._stopping.is_set():
            self._consumer.resume({self.tp})
            self._paused = False

    async def _backoff(self) -> None:
        failure = self._failure or Failure()
        self._failure = failure
        failure.waits += 1
        delay = self._p.retry.delay(failure.waits, self._p.rng)
        log.info("%s: %s waits %.2fs before the next try", self._p.name, self.tp, delay)
        await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        """Sleep `delay`, or less if the worker is told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # --- one record ---

    async def _handle(self, message: Message) -> bool:
        """Apply one record; True when it is done with (applied, duplicate or dead-lettered)."""
        p, failure = self._p, self._failure
        if failure is not None and failure.dead_letter_pending and failure.error is not None:
            return await self._dead_letter(message, failure.error, failure.attempts)
        try:
            with process_one(message, p.group_id):
                event = decode(message, p.wire, default_type=p.default_type)
                applied = await p.timed(apply_one(p.handler, p.db, p.inbox, event))
        except PoisonMessage as exc:
            return await self._dead_letter(message, exc, (failure.attempts if failure else 0) + 1)
        except Exception as exc:
            return await self._failed(message, exc)
        p.count(message.topic, applied)
        return True

    async def _failed(self, message: Message, exc: Exception) -> bool:
        p = self._p
        failure = self._failure = self._failure or Failure()
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        if is_transient(exc):
            log.warning(
                "%s: %s hit a transient failure (attempts not spent): %r", p.name, where, exc, extra=REPEATS
            )
        else:
            failure.attempts += 1
            failure.error = exc
            if failure.attempts >= p.retry.max_attempts:
                return await self._dead_letter(message, exc, failure.attempts)
            log.warning(
                "%s: %s failed (attempt %d of %d): %s: %s",
                p.name,
                where,
                failure.attempts,
                p.retry.max_attempts,
                type(exc).__name__,
                error_text(exc),
                exc_info=exc,
            )
        p.count(message.topic, "retried")
        return False

    async def _dead_letter(self, message: Message, error: BaseException, attempts: int) -> bool:
        p = self._p
        try:
            await p.dead_letters.publish(message, error, attempts)
        except Exception as exc:
            # Committing past it now would lose it: keep it at the head and try the publish again.
            log.error(
                "%s: could not dead-letter %s[%d]@%d to %s (%r); it stays uncommitted and is retried",
                p.name,
                message.topic,
                message.partition,
                message.offset,
                p.dead_letters.topic,
                exc,
            )
            failure = self._failure = self._failure or Failure()
            failure.dead_letter_pending, failure.error, failure.attempts = True, error, attempts
            p.count(message.topic, "retried")
            return False
        p.count(message.topic, "dlq")
        return True

    async def _try_batch(self, handler: Batch | IdempotentBatch, chunk: list[Message]) -> bool:
        """The chunk in one go (one transaction for `Batch`); False when any record needs care alone
        (nothing applied for `Batch`; for `IdempotentBatch` whatever was applied is applied again)."""
        p = self._p
        try:
            with process_batch(self.tp.topic, self.tp.partition, chunk, p.group_id):
                events = [decode(m, p.wire, default_type=p.default_type) for m in chunk]
                outcomes = await p.timed(self._apply_batch(handler, events))
        except Exception as exc:
            log.info(
                "%s: batch of %d on %s failed (%r); redoing it one record at a time",
                p.name,
                len(chunk),
                self.tp,
                exc,
            )
            return False
        for outcome, n in Counter(outcomes).items():
            p.count(self.tp.topic, outcome, n)
        return True

    async def _apply_batch(self, handler: Batch | IdempotentBatch, events: list[Event]) -> list[Applied]:
        p = self._p
        if isinstance(handler, IdempotentBatch):
            await handler.handle_batch(events)
            return ["ok"] * len(events)
        if p.db is None:  # the runner refuses this at construction; kept for the type checker
            raise RuntimeError("a batch handler needs a database")
        return await apply_batch(handler, p.db, p.inbox, events)
