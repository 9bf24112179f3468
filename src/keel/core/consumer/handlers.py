"""The three kinds of event handler a consumer runs, and how each applies its effect exactly once.

- `Transactional`: `handle(event, uow)`; the runner records the event in the inbox in the same
  transaction, so a redelivered event is skipped and has no second effect.
- `Idempotent`: `handle(event)`; no database, for effects that are idempotent by themselves
  (overwriting a key in Redis).
- `Batch`: `handle_batch(events, uow)`; many messages, one transaction, one inbox statement — for
  ingest-heavy consumers. A failing batch is redone one message at a time so a bad one stands alone.
- `IdempotentBatch`: `handle_batch(events)`; no database, effects idempotent by themselves, a fetched
  run of records at a time (a worker that publishes every result and awaits the acks once). A failing
  batch is redone one message at a time, like `Batch`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from keel.core.db import Database, UnitOfWork
from keel.core.events import Event, PoisonMessage

NaturalKey = Callable[[Event], str]
Applied = Literal["ok", "duplicate"]


@dataclass(frozen=True, slots=True)
class Transactional:
    handle: Callable[[Event, UnitOfWork], Awaitable[None]]
    # The inbox id for a bare message that came without an `event-id` header (an outside producer),
    # e.g. `lambda e: e.payload["order_uid"]`. Without it such a message is known by its position.
    natural_key: NaturalKey | None = None


@dataclass(frozen=True, slots=True)
class Idempotent:
    handle: Callable[[Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Batch:
    handle_batch: Callable[[Sequence[Event], UnitOfWork], Awaitable[None]]
    natural_key: NaturalKey | None = None


@dataclass(frozen=True, slots=True)
class IdempotentBatch:
    handle_batch: Callable[[Sequence[Event]], Awaitable[None]]
    # Urgency of a record (lower first). With it, a partition's batch is the most urgent records among
    # the next `lookahead` fetched, not the next ones in offset order; offsets are still committed only
    # past records that are all handled. A record whose urgency cannot be read counts as least urgent.
    priority: Callable[[Event], float] | None = None
    lookahead: int = 0


Handler = Transactional | Idempotent | Batch | IdempotentBatch


def inbox_id(event: Event, natural_key: NaturalKey | None) -> str:
    """The id the inbox knows this event by: its event id, or its natural key when it came without one."""
    if event.has_event_id or natural_key is None:
        return event.event_id
    try:
        key = natural_key(event)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PoisonMessage(f"no natural key in a message without event-id: {exc!r}") from exc
    if not isinstance(key, str) or not key:
        raise PoisonMessage(f"natural key must be a non-empty string, got {key!r}")
    return key


# One statement for any number of events; `RETURNING` names those not seen before. Duplicates within
# one statement are fine under DO NOTHING: the second row conflicts with the first and is skipped.
_CLAIM = """
INSERT INTO processed_events (consumer, event_id)
SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
RETURNING event_id
"""


async def claim(uow: UnitOfWork, consumer: str, ids: Sequence[str]) -> set[str]:
    """Insert the inbox rows in this unit of work; return the ids that were new."""
    conn = await uow.raw()
    rows = await conn.fetch(_CLAIM, consumer, list(ids))
    return {row[0] for row in rows}


async def apply_one(handler: Handler, db: Database | None, inbox: str, event: Event) -> Applied:
    """Run the handler for one event: effect and inbox row commit together, or neither does."""
    if isinstance(handler, Idempotent):
        await handler.handle(event)
        return "ok"
    if isinstance(handler, IdempotentBatch):
        await handler.handle_batch((event,))
        return "ok"
    if db is None:  # the runner refuses this at construction; kept for the type checker
        raise RuntimeError("a transactional handler needs a database")
    event_key = inbox_id(event, handler.natural_key)
    async with db.unit_of_work() as uow:
        if not await claim(uow, inbox, (event_key,)):
            return "duplicate"
        if isinstance(handler, Batch):
            await handler.handle_batch((event,), uow)
        else:
            await handler.handle(event, uow)
        await uow.commit()
    return "ok"


async def apply_batch(handler: Batch, db: Database, inbox: str, events: Sequence[Event]) -> list[Applied]:
    """Run the batch handler once for every event not seen before; one transaction for all of them.

    Returns, per event in order, whether it was applied or skipped as already handled (an event that
    appears twice in the batch counts once, at its first place)."""
    keys = [inbox_id(event, handler.natural_key) for event in events]
    async with db.unit_of_work() as uow:
        new = await claim(uow, inbox, keys)
        outcomes: list[Applied] = []
        fresh: list[Event] = []
        for key, event in zip(keys, events, strict=True):
            if key in new:
                new.discard(key)
                fresh.append(event)
                outcomes.append("ok")
            else:
                outcomes.append("duplicate")
        if fresh:
            await handler.handle_batch(fresh, uow)
        await uow.commit()
    return outcomes
