"""The record batches Keel builds for each partition and hands to aiokafka, shared by concurrent
callers, a partition's batches handed over in the order they were made."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from keel.core.bus.errors import PublishFailed
from keel.core.bus.message import OutgoingMessage
from keel.core.bus.partitioner import default_partitioner

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Sent:
    """A caller's records in a batch handed to aiokafka: the future of the batch's ack, its
    partition, where the caller's records start in the batch and their indexes in the caller's list."""

    future: asyncio.Future[Any]
    partition: int
    first: int
    members: list[int]


@dataclass(eq=False, slots=True)
class Open:
    """A batch Keel builds for one partition. It takes records from any caller until its turn comes
    (the batch before it handed to aiokafka): callers sending a few records at once share a batch, as
    they do through aiokafka's own `send`, rather than each waiting a round trip for a batch of its own."""

    tp: TP
    builder: Any
    after: asyncio.Future[asyncio.Future[Any]] | None  # the batch before it: handed over, or failed
    handed: asyncio.Future[asyncio.Future[Any]]  # aiokafka's future of the ack, once handed over
    size: int = 0
    closed: bool = False


async def enqueue(
    producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage], last: dict[TP, Open], timeout_s: float
) -> list[Sent]:
    """Every record into batches Keel builds, handed to aiokafka within `timeout_s`. A send and a
    future per record cost more CPU than this way (bench/results/changes.md).

    A key keeps its partition and order: records are appended in order and a partition's batches go
    to aiokafka in the order they were made, each once the one before it has (aiokafka holds one
    batch per partition and has the next wait for it to go out; its wait takes all the time waited so
    far off what is left at every turn it loses, so callers contending for a partition failed with
    KafkaTimeoutError within a second of a 30 s timeout). A caller's records join the partition's
    last batch while it still waits, else batches the caller makes and hands over, a round at a time
    across partitions (every partition's first, then every second one)."""
    made: list[Open] = []
    held: list[tuple[Open, int, list[int]]] = []
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
        Sent(future, batch.tp[1], first, members)
        for future, (batch, first, members) in zip(futures, held, strict=True)
    ]


def _append(
    producer: AIOKafkaProducer,
    messages: Sequence[OutgoingMessage],
    indexes: list[int],
    tp: TP,
    last: dict[TP, Open],
    made: list[Open],
) -> list[tuple[Open, int, list[int]]]:
    """One partition's records, in order, into its last batch while that one waits for its turn,
    then into new ones: (batch, where these records start in it, their indexes) per batch."""
    out: list[tuple[Open, int, list[int]]] = []
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


def _new_batch(producer: AIOKafkaProducer, tp: TP, last: dict[TP, Open], made: list[Open]) -> Open:
    before = last.get(tp)
    loop = asyncio.get_running_loop()
    batch = Open(tp, producer.create_batch(), before.handed if before else None, loop.create_future())
    last[tp] = batch
    made.append(batch)
    return batch


async def _hand_over(producer: AIOKafkaProducer, batch: Open) -> None:
    """The batch to aiokafka once the one before it is there (if that one failed, so does this)."""
    if batch.after is not None:
        await asyncio.shield(batch.after)
    batch.closed = True
    batch.builder.close()
    future = await producer.send_batch(batch.builder, batch.tp[0], partition=batch.tp[1])
    batch.handed.set_result(future)


def _fail(made: list[Open], last: dict[TP, Open], exc: BaseException) -> None:
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


def _discard_ack(handed: asyncio.Future[asyncio.Future[Any]]) -> None:
    if not handed.cancelled() and handed.exception() is None:
        handed.result().add_done_callback(discard_result)


def discard_result(future: asyncio.Future[Any]) -> None:
    # Nobody awaits these after an aborted batch; reading the outcome keeps asyncio from warning.
    if not future.cancelled():
        future.exception()
