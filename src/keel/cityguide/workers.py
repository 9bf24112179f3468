"""Wiring shared by the cityguide workers (story, tts): no routes, one producer, one consumer of a
bare-wire command topic whose handler is idempotent by itself (it overwrites by key) and takes a
fetched run of records at a time (results published together, acks awaited once)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter

from keel.cityguide import topics
from keel.core.bus.port import Producer
from keel.core.consumer import ConsumerOptions, ConsumerRunner, IdempotentBatch
from keel.core.events import Event
from keel.core.infra import Infra
from keel.core.service import Wiring


def no_routes() -> Sequence[APIRouter]:
    return []


async def started_producer(infra: Infra) -> Producer:
    producer = infra.bus.producer()
    await producer.start()
    return producer


def command_worker(
    infra: Infra,
    producer: Producer,
    *,
    group: str,
    topic: str,
    handle: Callable[[Sequence[Event]], Awaitable[None]],
    batch_size: int,
    priority: Callable[[Event], float] | None = None,
    lookahead: int = 0,
) -> Wiring:
    runner = ConsumerRunner(
        infra.bus,
        group_id=group,
        topics=[topic],
        wire="bare",
        handler=IdempotentBatch(handle, priority=priority, lookahead=lookahead),
        dlq_topic=topics.DLQ,
        default_event_type=topic,
        options=ConsumerOptions.from_settings(infra.settings, batch_size=batch_size),
    )
    return Wiring(workers=[runner], closers=[producer.stop])
