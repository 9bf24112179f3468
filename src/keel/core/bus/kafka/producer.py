"""KafkaProducer: records into batches (keel.core.bus.kafka.batches), every ack awaited within the
bus's timeout, and a producer abandoned, with every record it holds, when the broker stops acking."""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import RecordMetadata

from keel.core.bus.errors import BrokerUnavailable, BusError, PublishFailed
from keel.core.bus.kafka.batches import TP, Open, discard_result, enqueue
from keel.core.bus.kafka.failures import NO_PRODUCER_ID
from keel.core.bus.message import OutgoingMessage
from keel.core.bus.partitioner import default_partitioner
from keel.core.spans import start_sending

if TYPE_CHECKING:
    from keel.core.bus.kafka.bus import KafkaBus

log = logging.getLogger("keel.bus")

# How long a stopping producer waits for acks of what it holds before it drops them.
STOP_FLUSH_S = 5.0


class KafkaProducer:
    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._producer: AIOKafkaProducer | None = None
        self._restart = False  # set when a send abandoned the producer: the next send starts another
        # Per aiokafka producer, the last batch Keel made for each partition (`enqueue`).
        self._last: weakref.WeakKeyDictionary[AIOKafkaProducer, dict[TP, Open]] = weakref.WeakKeyDictionary()

    async def start(self) -> None:
        if self._producer is not None:
            return
        bus = self._bus
        producer = AIOKafkaProducer(
            bootstrap_servers=bus.brokers,
            client_id=bus.client_id,
            acks="all",
            enable_idempotence=bus.idempotence,
            linger_ms=bus.linger_ms,
            max_batch_size=bus.batch_bytes,
            request_timeout_ms=int(bus.timeout_s * 1000),
            partitioner=default_partitioner,
            **bus.client_options,
        )
        try:
            await bus.start_client(producer, "producer")
        except BrokerUnavailable as exc:
            if _refused_producer_id(producer, exc.__cause__):
                bus.report("producer", NO_PRODUCER_ID)
                raise BrokerUnavailable(NO_PRODUCER_ID) from exc
            raise
        self._producer, self._restart = producer, False
        bus.track(self, live=True)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        self._restart = False
        self._bus.track(self, live=False)
        if producer is None:
            return
        try:
            async with asyncio.timeout(STOP_FLUSH_S):
                await producer.flush()
        except TimeoutError:
            # The broker is away: what was not acknowledged is still the caller's (an outbox row).
            await _drop_unacknowledged(producer, "producer stopped")
        await producer.stop()

    async def send(self, message: OutgoingMessage) -> None:
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._producer is not None and _sender_died(self._producer):
            # aiokafka's sender ends for good on errors no retry mends (OutOfOrderSequenceNumber
            # after a leader change, ProducerFenced); every later send would fail the same way.
            log.warning(
                "kafka producer's sender stopped (%r); starting a new producer", _sender_error(self._producer)
            )
            await self._abandon(self._producer)
        if self._producer is None and self._restart:
            await self.start()
        producer = self._producer
        if producer is None:
            raise BusError("producer is not started")
        # Topics are created with our partition count on first use, as the memory bus does, rather
        # than by the broker's auto-creation with its own default.
        await self._bus.ensure_topics([m.topic for m in messages])
        sending = start_sending(messages)
        if sending is None:
            await self._send_many(producer, messages)
            return
        try:
            results = await self._send_many(producer, sending.messages)
        except BaseException as exc:
            sending.failed(exc)
            raise
        sending.acked(results)

    async def _send_many(
        self, producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage]
    ) -> list[tuple[int, int] | None]:
        """Every record in flight, then every ack; each record's (partition, offset), in order (None
        where the broker gave no offset)."""
        sent = await enqueue(producer, messages, self._last.setdefault(producer, {}), self._bus.timeout_s)
        # All records are in flight before the first ack is awaited: batching, not one round trip each.
        try:
            async with asyncio.timeout(self._bus.timeout_s):
                # Each caller awaits its own shield of a shared batch's ack: one caller's cancelled
                # wait must not cancel the others'.
                results = await asyncio.gather(
                    *(asyncio.shield(batch.future) for batch in sent), return_exceptions=True
                )
        except TimeoutError:
            for batch in sent:
                batch.future.add_done_callback(discard_result)
            await self._abandon(producer)
            reason = f"{len(messages)} records not acknowledged within {self._bus.timeout_s}s"
            self._bus.report("producer", reason)
            raise PublishFailed(reason) from None
        failed = [
            (r, len(b.members)) for r, b in zip(results, sent, strict=True) if isinstance(r, BaseException)
        ]
        if failed:
            reason = f"{sum(n for _, n in failed)} of {len(messages)} records failed: {failed[0][0]!r}"
            self._bus.report("producer", reason)
            raise PublishFailed(reason) from failed[0][0]
        self._bus.report("producer", None)
        positions: list[tuple[int, int] | None] = [None] * len(messages)
        for metadata, batch in zip(results, sent, strict=True):
            if isinstance(metadata, RecordMetadata):  # None: the broker gave no offset
                # A batch's records have consecutive offsets from its base.
                for n, index in enumerate(batch.members, metadata.offset + batch.first):
                    positions[index] = (batch.partition, n)
        return positions

    async def _abandon(self, producer: AIOKafkaProducer) -> None:
        """Drop a producer whose records went unacknowledged, and every record it still holds.

        An idempotent aiokafka producer never expires a batch (the Java client's delivery.timeout.ms
        has no counterpart): it retries until the broker answers, and its stop() waits for that too.
        The caller still holds what it sent (the outbox row stays unpublished) and sends it again
        through a new producer, started on the next send: a new producer id, so nothing of the old
        session's sequence numbers is carried over, and consumers' inboxes absorb a record the broker
        had in fact written."""
        if self._producer is producer:
            self._producer = None
            self._restart = True
        await _drop_unacknowledged(producer, "producer abandoned")


def _sender_died(producer: AIOKafkaProducer) -> bool:
    task = producer._sender.sender_task
    return task is not None and task.done()


def _sender_error(producer: AIOKafkaProducer) -> BaseException | None:
    task = producer._sender.sender_task
    return None if task is None or task.cancelled() else task.exception()


def _refused_producer_id(producer: AIOKafkaProducer, cause: BaseException | None) -> bool:
    """The producer reached the cluster (it has its brokers' metadata), holds no producer id, and
    the broker's answer to InitProducerId was an error no retry mends (Tansu: UnknownError). A
    retriable one (a coordinator still loading) ends in a timeout instead and is not diagnosed so."""
    manager = producer._txn_manager
    return (
        manager is not None
        and not manager.has_pid()
        and bool(producer.client.cluster.brokers())
        and isinstance(cause, KafkaError)
        and not isinstance(cause, KafkaConnectionError)
        and not cause.retriable
    )


async def _drop_unacknowledged(producer: AIOKafkaProducer, reason: str) -> None:
    """Stop aiokafka's sender (its in-flight requests end within the request timeout), fail every
    batch it still holds, and close the producer: aiokafka's own stop() would wait for the acks."""
    try:
        await producer._sender.close()
    except asyncio.CancelledError:
        # Awaiting a sender task that ended cancelled raises here too: only a cancellation of this
        # task may go on (one that escaped used to end the outbox relay's loops without a word).
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    _fail_held(producer, PublishFailed(reason))
    await producer.stop()


def _fail_held(producer: AIOKafkaProducer, failure: PublishFailed) -> None:
    """Every batch aiokafka holds failed. A batch it sent and queued again for a retry has left the
    pending set that the done callback of its first send removes it from: `fail_all` alone logged a
    KeyError for each (and asyncio "Future exception was never retrieved" lines with them)."""
    accumulator = producer._message_accumulator
    queued = list(itertools.chain.from_iterable(accumulator._batches.values()))
    accumulator._pending_batches.update(queued)
    accumulator.fail_all(failure)
    for batch in queued:
        # A batch still queued (its partition had no leader, or waited behind one in flight) gets
        # the failure on the waiter that tells the next batch it may follow; nobody may be waiting.
        discard_result(batch._drain_waiter)
