"""The production bus adapter: aiokafka behind the bus port, with bounded waits on a dead broker.

Every call that talks to the broker outside a consumer's own fetch loop (start, commit, lag, topic
creation, ping) is bounded, so a broker that is down or silent fails a call instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import RecordMetadata

from keel.core.bus.errors import (
    BrokerUnavailable,
    BusError,
    CommitFailed,
    ConsumerStopped,
    NotAssigned,
    PublishFailed,
)
from keel.core.bus.message import Message, OutgoingMessage, TopicPartition
from keel.core.bus.partitioner import default_partitioner
from keel.core.bus.port import RebalanceListener
from keel.core.bus.refusal import refusal
from keel.core.bus.security import PLAINTEXT, KafkaSecurity
from keel.core.spans import start_sending

log = logging.getLogger("keel.bus")

NO_PRODUCER_ID = (
    "the broker refused the idempotent producer a producer id (InitProducerId): for a broker without "
    "idempotent producers set KAFKA_IDEMPOTENCE=false"
)

# How long the start-up diagnosis waits for each broker before calling it unreachable.
REFUSAL_PROBE_S = 5.0
DIAGNOSIS_EVERY_S = 10.0

# How long a stopping producer waits for acks of what it holds before it drops them.
STOP_FLUSH_S = 5.0

# What a dead or silent broker surfaces as, depending on where the wait ends.
_UNREACHABLE = (TimeoutError, KafkaError, OSError)


def is_dead_letter_topic(topic: str) -> bool:
    """Every DLQ topic of Keel ends in `.dlq` (DESIGN.md's topic list)."""
    return topic.endswith(".dlq")


class KafkaBus:
    """Producers, consumers and topic administration against a Kafka-protocol cluster."""

    name = "kafka"

    def __init__(
        self,
        brokers: list[str],
        *,
        idempotence: bool = True,
        partitions: int = 6,
        client_id: str = "keel",
        linger_ms: int = 5,
        batch_bytes: int = 64 * 1024,
        fetch_max_wait_ms: int = 100,
        replication_factor: int = 1,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        timeout_s: float = 30.0,
        ping_timeout_s: float = 2.0,
        security: KafkaSecurity = PLAINTEXT,
        dlq_retention_ms: int | None = None,
    ) -> None:
        if not brokers:
            raise ValueError("KafkaBus needs at least one broker address")
        self.brokers = list(brokers)
        self.idempotence = idempotence
        self.partitions = partitions
        self.client_id = client_id
        self.linger_ms = linger_ms
        # A producer batch's size cap (aiokafka's and Java's default: 16 KiB). A producer has one
        # request in flight per broker, carrying one batch per partition: at 16 KiB a relay batch of
        # outbox rows took several round trips per partition, a larger cap fewer (bench/results/changes.md).
        self.batch_bytes = batch_bytes
        # How long the broker may hold a fetch that found nothing, should it not answer as soon as a
        # record comes. Each hop of a flow can wait this long on an idle platform: the cityguide flow
        # reached its first audio sooner below aiokafka's default (bench/results/changes.md).
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.replication_factor = replication_factor
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.timeout_s = timeout_s
        self.ping_timeout_s = ping_timeout_s
        # One TLS context for every client of this bus (building one reads the CA file).
        self.security = security
        self.client_options = security.client_options()
        # retention.ms of the dead-letter topics this bus creates (None: the broker's default).
        self.dlq_retention_ms = dlq_retention_ms
        self._known_topics: set[str] = set()
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()
        self._live: set[KafkaProducer | KafkaConsumer] = set()
        # What this process's clients cannot do now, by client (`producer`, `consumer <group>`): the
        # broker may answer a ping and still refuse them (no producer id, a group it will not serve).
        self._failing: dict[str, str] = {}
        self._told: set[str] = set()
        # Why the brokers stopped answering, when a probe can tell (credentials revoked, a certificate
        # changed): looked for in the background after a failed ping, at most every DIAGNOSIS_EVERY_S,
        # so a readiness check never waits for it; the next failing check names it.
        self._diagnosis: str | None = None
        self._diagnosing: asyncio.Task[None] | None = None
        self._diagnosed_at = -DIAGNOSIS_EVERY_S

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None = None,
        on_revoke: RebalanceListener | None = None,
    ) -> KafkaConsumer:
        return KafkaConsumer(self, topics, group_id, on_assign=on_assign, on_revoke=on_revoke)

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        missing = [t for t in dict.fromkeys(topics) if t not in self._known_topics]
        if not missing:
            return
        count = partitions or self.partitions
        try:
            async with asyncio.timeout(self.timeout_s):
                admin = await self._admin_client()
                response = await admin.create_topics(
                    [
                        NewTopic(t, count, self.replication_factor, topic_configs=self._configs(t))
                        for t in missing
                    ]
                )
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"cannot create topics {missing}: {exc!r}") from exc
        for result in response.topic_errors:
            topic, code = result[0], result[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BusError(f"cannot create topic {topic!r}: error {code} {result[2:]}")
        # CreateTopics returns once the controller has the topics; a broker serves them a moment
        # later. A consumer that subscribed before its broker knew a topic would wait for its next
        # metadata refresh (minutes): wait here until every partition has a leader.
        try:
            async with asyncio.timeout(self.timeout_s):
                while not await self._have_leaders(missing):  # noqa: ASYNC110 - polling the broker
                    await asyncio.sleep(0.05)
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"topics {missing} created but not served: {exc!r}") from exc
        self._known_topics.update(missing)

    def _configs(self, topic: str) -> dict[str, str]:
        if self.dlq_retention_ms is not None and is_dead_letter_topic(topic):
            return {"retention.ms": str(self.dlq_retention_ms)}
        return {}

    async def _have_leaders(self, topics: list[str]) -> bool:
        admin = await self._admin_client()
        described = await admin.describe_topics(topics)
        return len(described) == len(topics) and all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.ping_timeout_s):
                admin = await self._admin_client()
                await admin.describe_cluster()
        except _UNREACHABLE as exc:
            self._diagnose()
            raise BrokerUnavailable(
                self._diagnosis or f"kafka {self.brokers} did not answer: {exc!r}"
            ) from exc
        self._diagnosis = None
        if self._failing:
            raise BrokerUnavailable("; ".join(f"{client}: {why}" for client, why in self._failing.items()))

    async def refusal(self) -> str | None:
        """Whether a broker refuses this client for a reason no retry fixes (credentials, TLS), in one
        line naming the setting; None when the brokers accept it or are only unreachable."""
        for address in self.brokers:
            if reason := await refusal(address, self.security, min(self.timeout_s, REFUSAL_PROBE_S)):
                return reason
        return None

    def _diagnose(self) -> None:
        if self._diagnosing is not None and not self._diagnosing.done():
            return
        if time.monotonic() - self._diagnosed_at < DIAGNOSIS_EVERY_S:
            return
        self._diagnosed_at = time.monotonic()

        async def probe() -> None:
            self._diagnosis = await self.refusal()

        self._diagnosing = asyncio.create_task(probe(), name="kafka-diagnosis")

    def report(self, client: str, failure: str | None) -> None:
        """Record what `client` cannot do (None: it works again). A diagnosis with a fix is logged
        once per process, in one line, rather than at every retry."""
        if failure is None:
            self._failing.pop(client, None)
            return
        self._failing[client] = failure
        if failure == NO_PRODUCER_ID and failure not in self._told:
            self._told.add(failure)
            log.error("kafka %s: %s", self.brokers, failure)

    async def close(self) -> None:
        if self._diagnosing is not None:
            self._diagnosing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._diagnosing
        for client in list(self._live):
            await client.stop()
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def admin_client(self) -> AIOKafkaAdminClient:
        """The bus's admin connection, for operator tools (keel.ops) that need more than the port."""
        return await self._admin_client()

    async def _admin_client(self) -> AIOKafkaAdminClient:
        """One admin connection, opened on first need and opened again after a failed start."""
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.brokers,
                    client_id=f"{self.client_id}-admin",
                    request_timeout_ms=int(self.timeout_s * 1000),
                    **self.client_options,
                )
                try:
                    await admin.start()
                except BaseException:
                    await admin.close()
                    raise
                self._admin = admin
            return self._admin

    async def start_client(self, client: AIOKafkaProducer | AIOKafkaConsumer, what: str) -> None:
        """Start an aiokafka client within `timeout_s`; stop it and raise BrokerUnavailable otherwise."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.start()
        except BaseException as exc:
            await client.stop()
            if isinstance(exc, _UNREACHABLE):
                failure = BrokerUnavailable(f"{what} could not start against {self.brokers}: {exc!r}")
                self.report(what, str(failure))
                raise failure from exc
            raise
        self.report(what, None)

    def track(self, client: KafkaProducer | KafkaConsumer, live: bool) -> None:
        if live:
            self._live.add(client)
        else:
            self._live.discard(client)


class KafkaProducer:
    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._producer: AIOKafkaProducer | None = None
        self._restart = False  # set when a send abandoned the producer: the next send starts another
        # Per aiokafka producer, the last batch Keel made for each partition (`_enqueue`).
        self._last: weakref.WeakKeyDictionary[AIOKafkaProducer, dict[TP, _Open]] = weakref.WeakKeyDictionary()

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
        sent = await _enqueue(producer, messages, self._last.setdefault(producer, {}), self._bus.timeout_s)
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
                batch.future.add_done_callback(_discard_result)
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


TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Sent:
    """A caller's records in a batch handed to aiokafka: the future of the batch's ack, its
    partition, where the caller's records start in the batch and their indexes in the caller's list."""

    future: asyncio.Future[Any]
    partition: int
    first: int
    members: list[int]


@dataclass(eq=False, slots=True)
class _Open:
    """A batch Keel builds for one partition. It takes records from any caller until its turn comes
    (the batch before it handed to aiokafka): callers sending a few records at once share a batch, as
    they do through aiokafka's own `send`, rather than each waiting a round trip for a batch of its own."""

    tp: TP
    builder: Any
    after: asyncio.Future[asyncio.Future[Any]] | None  # the batch before it: handed over, or failed
    handed: asyncio.Future[asyncio.Future[Any]]  # aiokafka's future of the ack, once handed over
    size: int = 0
    closed: bool = False


async def _enqueue(
    producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage], last: dict[TP, _Open], timeout_s: float
) -> list[_Sent]:
    """Every record into batches Keel builds, handed to aiokafka within `timeout_s`. A send and a
    future per record cost more CPU than this way (bench/results/changes.md).

    A key keeps its partition and order: records are appended in order and a partition's batches go
    to aiokafka in the order they were made, each once the one before it has (aiokafka holds one
    batch per partition and has the next wait for it to go out; its wait takes all the time waited so
    far off what is left at every turn it loses, so callers contending for a partition failed with
    KafkaTimeoutError within a second of a 30 s timeout). A caller's records join the partition's
    last batch while it still waits, else batches the caller makes and hands over, a round at a time
    across partitions (every partition's first, then every second one)."""
    made: list[_Open] = []
    held: list[tuple[_Open, int, list[int]]] = []
    try:
        async with asyncio.timeout(timeout_s):
            built = [
                _append(producer, messages, indexes, tp, last, made)
                for tp, indexes in (await _by_partition(producer, messages)).items()
            ]
            for round_ in itertools.zip_longest(*built):
                for batch, first, members in filter(None, round_):
                    if batch in made:  # the caller's own: its to hand over, in turn
                        await _hand_over(producer, batch)
                    held.append((batch, first, members))
            futures = [await asyncio.shield(batch.handed) for batch, _, _ in held]
    except BaseException as exc:
        _fail(made, last, exc)
        for batch, _, _ in held:  # handed over now or later by its maker: nobody here awaits its ack
            batch.handed.add_done_callback(_discard_ack)
        if isinstance(exc, PublishFailed):
            raise
        if isinstance(exc, KafkaError):
            raise PublishFailed(f"could not enqueue a record: {exc!r}") from exc
        if isinstance(exc, TimeoutError):
            raise PublishFailed(f"could not enqueue {len(messages)} records within {timeout_s}s") from None
        raise
    return [
        _Sent(future, batch.tp[1], first, members)
        for future, (batch, first, members) in zip(futures, held, strict=True)
    ]


def _append(
    producer: AIOKafkaProducer,
    messages: Sequence[OutgoingMessage],
    indexes: list[int],
    tp: TP,
    last: dict[TP, _Open],
    made: list[_Open],
) -> list[tuple[_Open, int, list[int]]]:
    """One partition's records, in order, into its last batch while that one waits for its turn,
    then into new ones: (batch, where these records start in it, their indexes) per batch."""
    out: list[tuple[_Open, int, list[int]]] = []
    batch = last.get(tp)
    if batch is None or batch.closed:
        batch = _new_batch(producer, tp, last, made)
    first, members = batch.size, list[int]()
    for index in indexes:
        m = messages[index]
        record = {"key": m.key, "value": m.value, "timestamp": None, "headers": list(m.headers)}
        if batch.builder.append(**record) is None:  # full: the record starts the next one
            if members:
                out.append((batch, first, members))
            batch = _new_batch(producer, tp, last, made)
            first, members = 0, []
            batch.builder.append(**record)  # an empty batch takes any record
        batch.size += 1
        members.append(index)
    out.append((batch, first, members))
    return out


def _new_batch(producer: AIOKafkaProducer, tp: TP, last: dict[TP, _Open], made: list[_Open]) -> _Open:
    before = last.get(tp)
    loop = asyncio.get_running_loop()
    batch = _Open(tp, producer.create_batch(), before.handed if before else None, loop.create_future())
    last[tp] = batch
    made.append(batch)
    return batch


async def _hand_over(producer: AIOKafkaProducer, batch: _Open) -> None:
    """The batch to aiokafka once the one before it is there (if that one failed, so does this)."""
    if batch.after is not None:
        await asyncio.shield(batch.after)
    batch.closed = True
    batch.builder.close()
    future = await producer.send_batch(batch.builder, batch.tp[0], partition=batch.tp[1])
    batch.handed.set_result(future)


def _fail(made: list[_Open], last: dict[TP, _Open], exc: BaseException) -> None:
    """The caller's batches not yet handed over fail, and with them the other callers' records in
    them; a partition whose last batch failed starts afresh with the next."""
    failed = exc if isinstance(exc, PublishFailed) else PublishFailed(f"could not enqueue a record: {exc!r}")
    for batch in made:
        if batch.handed.done():
            continue
        batch.closed = True
        batch.handed.set_exception(failed)
        batch.handed.exception()  # retrieved: no "never retrieved" warning when no other caller waits
        if last.get(batch.tp) is batch:
            del last[batch.tp]


async def _by_partition(
    producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage]
) -> dict[TP, list[int]]:
    """The records' indexes per (topic, partition), in order: the partition aiokafka's `send` would
    pick (the producer's partitioner over the topic's partitions, keyless records any available)."""
    chosen: dict[str, tuple[list[int], list[int]]] = {}
    groups: dict[TP, list[int]] = {}
    for index, message in enumerate(messages):
        known = chosen.get(message.topic)
        if known is None:
            every = sorted(await producer.partitions_for(message.topic))
            available = list(producer.client.cluster.available_partitions_for_topic(message.topic) or ())
            known = chosen[message.topic] = (every, available)
        partition = default_partitioner(message.key, *known)
        groups.setdefault((message.topic, partition), []).append(index)
    return groups


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
        _discard_result(batch._drain_waiter)


def _discard_ack(handed: asyncio.Future[asyncio.Future[Any]]) -> None:
    if not handed.cancelled() and handed.exception() is None:
        handed.result().add_done_callback(_discard_result)


def _discard_result(future: asyncio.Future[Any]) -> None:
    # Nobody awaits these after an aborted batch; reading the outcome keeps asyncio from warning.
    if not future.cancelled():
        future.exception()


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, on_assign: RebalanceListener | None, on_revoke: RebalanceListener | None) -> None:
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        # aiokafka also calls this, empty, before the first join; the port only reports real losses.
        if revoked and self._on_revoke is not None:
            await self._on_revoke(_ours(revoked))

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        if self._on_assign is not None:
            await self._on_assign(_ours(assigned))


def _ours(partitions: set[KafkaTopicPartition]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


def _theirs(tp: TopicPartition) -> KafkaTopicPartition:
    # aiokafka checks isinstance against its own TopicPartition, so ours must be converted.
    return KafkaTopicPartition(tp.topic, tp.partition)


def message_of(record: ConsumerRecord[bytes, bytes]) -> Message:
    """An aiokafka record as the bus's Message."""
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
        timestamp_ms=record.timestamp,
    )


class KafkaConsumer:
    """A group member with manual commits that starts from the earliest offset when none is committed."""

    def __init__(
        self,
        bus: KafkaBus,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None,
        on_revoke: RebalanceListener | None,
    ) -> None:
        self._bus = bus
        self.topics = list(dict.fromkeys(topics))
        self.group_id = group_id
        self._listener = _ListenerBridge(on_assign, on_revoke)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._consumer is not None:
            return
        bus = self._bus
        await bus.ensure_topics(self.topics)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.brokers,
            client_id=bus.client_id,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=bus.session_timeout_ms,
            heartbeat_interval_ms=bus.heartbeat_interval_ms,
            request_timeout_ms=int(bus.timeout_s * 1000),
            fetch_max_wait_ms=bus.fetch_max_wait_ms,
            **bus.client_options,
        )
        consumer.subscribe(self.topics, listener=self._listener)
        # start() returns once the group has given this member its first assignment.
        await bus.start_client(consumer, f"consumer of group {self.group_id!r}")
        self._consumer = consumer
        bus.track(self, live=True)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._bus.track(self, live=False)
        if consumer is not None:
            await consumer.stop()

    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ConsumerStopped(f"consumer of group {self.group_id!r} is stopped")
        return self._consumer

    async def getmany(self, timeout_s: float, max_records: int) -> list[Message]:
        consumer = self._running()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except ConsumerStoppedError as exc:
            raise ConsumerStopped(f"consumer of group {self.group_id!r} stopped while reading") from exc
        return [message_of(record) for records in batches.values() for record in records]

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            raise CommitFailed(f"consumer of group {self.group_id!r} is stopped and owns no partition")
        if not offsets:
            return
        try:
            # aiokafka retries retriable errors forever (e.g. no coordinator while the broker is down).
            async with asyncio.timeout(self._bus.timeout_s):
                await consumer.commit({_theirs(tp): offset for tp, offset in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitFailed(f"group {self.group_id!r} has rebalanced: {exc}") from exc
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"commit for group {self.group_id!r} failed: {exc!r}") from exc

    def assignment(self) -> set[TopicPartition]:
        consumer = self._consumer
        return _ours(consumer.assignment()) if consumer is not None else set()

    def pause(self, partitions: set[TopicPartition]) -> None:
        # Partitions not (or no longer) owned are skipped: a rebalance may have taken them meanwhile.
        if self._consumer is not None:
            owned = self._consumer.assignment()
            self._consumer.pause(*(_theirs(tp) for tp in partitions if tp in owned))

    def resume(self, partitions: set[TopicPartition]) -> None:
        if self._consumer is not None:
            owned = self._consumer.assignment()
            self._consumer.resume(*(_theirs(tp) for tp in partitions if tp in owned))

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._running().seek(_theirs(tp), offset)
        except IllegalStateError as exc:
            raise NotAssigned(f"{tp} is not assigned to this consumer") from exc

    async def lag(self) -> dict[TopicPartition, int]:
        consumer = self._running()
        owned = list(consumer.assignment())
        if not owned:
            return {}
        lags: dict[TopicPartition, int] = {}
        try:
            async with asyncio.timeout(self._bus.timeout_s):
                ends = await consumer.end_offsets(owned)
                for tp in owned:
                    # A rebalance may take partitions away while this awaits: skip those.
                    if tp not in consumer.assignment():
                        continue
                    end = _log_end(ends[tp], consumer.highwater(tp))
                    with contextlib.suppress(IllegalStateError):
                        lags[TopicPartition(tp.topic, tp.partition)] = max(
                            0, end - await consumer.position(tp)
                        )
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"lag of group {self.group_id!r} unavailable: {exc!r}") from exc
        return lags


def _log_end(listed: int, highwater: int | None) -> int:
    """The end of a partition's log: the broker's ListOffsets answer, or the last fetch's highwater.

    Kafka's ListOffsets is exact and the highwater can only trail it. Tansu (the test broker) answers
    ListOffsets with the last batch's base offset + 1, so the highwater is the better figure there."""
    return max(listed, highwater or 0)
