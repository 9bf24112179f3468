"""Writing events into the transactional outbox, inside the caller's own transaction.

Rows land in `outbox_events` in the same transaction as the business change, so an event exists if
and only if the change committed. The relay (`keel.core.outbox.relay`) publishes them afterwards.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.core.bus.message import Headers
from keel.core.db import UnitOfWork
from keel.core.events import MAX_EVENT_BYTES, Event, WireFormat, dumps

# Room left for the envelope fields, so an enveloped message stays within what consumers accept.
MAX_PAYLOAD_BYTES = MAX_EVENT_BYTES - 1024

# The channel the relay LISTENs on; writers that opt in NOTIFY it when their transaction commits.
OUTBOX_CHANNEL = "keel_outbox"

INSERT_ONE = """
INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, headers, shard, created_at)
VALUES ($1::uuid, $2, $3, $4, $5, $6::text::jsonb, $7::text::jsonb, $8, $9)
"""

# Arrays in, one row per element, in array order so ids (and per-key publish order) follow the input.
INSERT_MANY = """
INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, headers, shard, created_at)
SELECT r.event_id, $2, r.key, r.event_type, $3, r.payload::jsonb, r.headers::jsonb, r.shard, r.created_at
FROM unnest($1::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int2[], $9::timestamptz[])
    WITH ORDINALITY AS r(event_id, key, event_type, payload, headers, shard, created_at, n)
ORDER BY r.n
"""


def _notifying(statement: str) -> str:
    # NOTIFY is delivered at commit and never for a rollback; the same (channel, payload) sent
    # several times in one transaction is delivered once.
    # Composed from this module's constants only: no input reaches the SQL text.
    return f"WITH ins AS ({statement} RETURNING 1) SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM ins LIMIT 1"  # noqa: S608


def shard_for(key: str, shards: int) -> int:
    """The outbox shard of a key: CRC-32 of its UTF-8 bytes mod `shards`.

    Stable across processes and releases (Python's `hash()` is salted per process), so every writer
    puts one key in one shard, and the one relay that holds that shard publishes the key in order."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return zlib.crc32(key.encode()) % shards


def payload_json(payload: dict[str, Any]) -> str:
    """The `payload` column. Refused here, in the business transaction, when too large to publish:
    a row the broker rejects forever would hold up every later event of its shard."""
    raw = dumps(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"event payload is {len(raw)} bytes; at most {MAX_PAYLOAD_BYTES} can be published")
    return raw.decode()


def headers_json(headers: Headers) -> str:
    """The `headers` column: a JSON object of header name → text (trace context is ASCII)."""
    try:
        return dumps({name: value.decode() for name, value in headers}).decode()
    except UnicodeDecodeError:
        raise ValueError("outbox headers must be UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One `outbox_events` row as statement parameters: built by `outbox_row` alone, so every writer
    (this module's statements, a service's own combined statement) gets the same guards."""

    event_id: str
    topic: str
    key: str | None
    event_type: str
    wire: WireFormat
    payload: str
    headers: str
    shard: int
    created_at: Any

    def params(self) -> tuple[Any, ...]:
        """In `INSERT_ONE`'s parameter order."""
        return (
            self.event_id,
            self.topic,
            self.key,
            self.event_type,
            self.wire,
            self.payload,
            self.headers,
            self.shard,
            self.created_at,
        )


def outbox_row(event: Event, topic: str, shards: int, wire: WireFormat = "envelope") -> OutboxRow:
    """The row for `event`; ValueError for a payload too large to publish or headers that are not text."""
    # Keyless events have no order to keep: spread them by their id.
    shard = shard_for(event.key if event.key is not None else event.event_id, shards)
    return OutboxRow(
        event.event_id,
        topic,
        event.key,
        event.event_type,
        wire,
        payload_json(event.payload),
        headers_json(event.headers),
        shard,
        event.created_at,
    )


class Outbox:
    """Adds events to the outbox in a unit of work. Built once at start-up with the shard count.

    `wake` (e.g. `relay.notify` of an in-process relay) is called after the transaction commits.
    `notify=True` also NOTIFYs the relay's channel so relays in other processes wake at once. It is
    off by default: PostgreSQL serialises the commits of notifying transactions on a global lock, which
    caps the writers' commit rate (docs/design-decisions.md, with the figure) — so hot paths rely on
    the relay's short poll instead."""

    def __init__(self, shards: int, *, wake: Callable[[], None] | None = None, notify: bool = False) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.shards = shards
        self._wake = wake
        self._insert_one = _notifying(INSERT_ONE) if notify else INSERT_ONE
        self._insert_many = _notifying(INSERT_MANY) if notify else INSERT_MANY

    def row(self, event: Event, topic: str, wire: WireFormat = "envelope") -> OutboxRow:
        return outbox_row(event, topic, self.shards, wire)

    async def add(self, uow: UnitOfWork, event: Event, topic: str, wire: WireFormat = "envelope") -> None:
        """Insert one event, in one round trip, inside `uow`'s transaction."""
        conn = await uow.raw()
        await conn.execute(self._insert_one, *self.row(event, topic, wire).params())
        self._after_commit(uow)

    async def add_many(
        self, uow: UnitOfWork, events: Sequence[Event], topic: str, wire: WireFormat = "envelope"
    ) -> None:
        """Insert many events of one topic in one round trip; they are published in this order per key."""
        if not events:
            return
        columns: list[list[Any]] = [[] for _ in range(7)]
        for event in events:
            row = self.row(event, topic, wire)
            values = (
                row.event_id,
                row.key,
                row.event_type,
                row.payload,
                row.headers,
                row.shard,
                row.created_at,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        ids, keys, types, payloads, headers, shards, created = columns
        conn = await uow.raw()
        await conn.execute(
            self._insert_many, ids, topic, wire, keys, types, payloads, headers, shards, created
        )
        self._after_commit(uow)

    def _after_commit(self, uow: UnitOfWork) -> None:
        wake = self._wake
        if wake is None:
            return

        async def woken() -> None:
            wake()

        uow.after_commit(woken)


def load_headers(raw: str) -> Headers:
    """Read the `headers` column back: an object of name → text, or a list of [name, text] pairs."""
    if raw == "{}":
        return ()  # most rows carry no trace context: skip the parse
    data = orjson.loads(raw)
    pairs = data.items() if isinstance(data, dict) else data
    return tuple((str(name), str(value).encode()) for name, value in pairs)
