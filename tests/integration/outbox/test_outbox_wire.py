"""The relay builds each record around the payload text PostgreSQL returns (no parse, no re-encode).
Consumers must see the same event as when it decoded the payload and encoded the envelope again: this
compares the two record by record over payloads chosen to trip a text-level build (escapes, quotes next
to colons, Unicode, numbers, nesting), in both wire formats, with and without trace headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from keel.core.bus.message import Message, OutgoingMessage
from keel.core.db import Database
from keel.core.events import Event, WireFormat, decode, encode
from keel.core.outbox import Outbox, OutboxRelay, sql
from keel.core.outbox.relay import to_message
from keel.core.outbox.writer import load_headers
from tests.integration.outbox.conftest import Broker, running, unpublished
from tests.support.eventually import eventually

# The claim's columns (sql.CLAIM), without its locking, and what the old relay read.
CLAIMED = f"""
SELECT {sql.RECORD_COLUMNS}, o.payload::text AS payload, o.created_at
FROM outbox_events o ORDER BY o.id
"""
TRACE = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
PAYLOADS = [
    {},
    {"ticket_id": "t-1", "title": "Printer on fire", "created_by": "bench"},
    {"text": 'he said "stop": now', "path": "C:\\temp\\x", "nl": "a\nb\tc\r", "ctl": "\u0001\u001f"},
    {"ru": "Добро пожаловать в наш город!", "emoji": "🔥🎧", "mixed": "café ünïcode"},
    {"n": 0, "neg": -17, "big": 9_007_199_254_740_993, "f": 0.1, "small": 1.5e-7, "exp": 2.5e15},
    {"flags": [True, False, None], "nested": {"a": [{"b": {"c": []}}], "": "empty key"}},
    {"next_audio": [f"audio-{n}" for n in range(50)], "route_id": "r-1", "z": 1, "aa": 2},
]


def before(row: Any) -> OutgoingMessage:
    """What the relay sent before the claim built the value: the payload parsed, the envelope encoded
    again."""
    event = Event(
        event_type=row["event_type"],
        payload=orjson.loads(row["payload"]),
        key=row["key"],
        event_id=row["event_id"],
        created_at=row["created_at"],
        headers=load_headers(row["headers"]),
    )
    return encode(event, row["topic"], wire_of(row))


def wire_of(row: Any) -> WireFormat:
    return "bare" if row["wire"] == "bare" else "envelope"


def consumed(m: OutgoingMessage) -> Message:
    return Message(topic=m.topic, partition=0, offset=0, key=m.key, value=m.value, headers=m.headers)


async def write_all(db: Database, outbox: Outbox) -> list[Event]:
    events = []
    async with db.unit_of_work() as uow:
        for n, payload in enumerate(PAYLOADS):
            wires: tuple[WireFormat, ...] = ("envelope", "bare")
            for wire in wires:
                for headers in ((), TRACE):
                    # A key with a quote and one without; one keyless (spread by event id).
                    key = None if n == 1 else f'k-{n}-"{wire}"'
                    event = Event(
                        'thing."happened"' if n == 2 else "thing.happened", payload, key, headers=headers
                    )
                    await outbox.add(uow, event, f"wire.{wire}", wire)
                    events.append(event)
        await uow.commit()
    return events


async def test_relay_records_decode_to_the_same_events_as_the_re_encoded_ones(db: Database, outbox: Outbox):
    events = await write_all(db, outbox)
    async with db.unit_of_work() as uow:
        rows = await (await uow.raw()).fetch(CLAIMED)
    assert len(rows) == len(events) == len(PAYLOADS) * 4

    same_bytes = 0
    for row in rows:
        new, old = to_message(row), before(row)
        wire = wire_of(row)
        assert (new.topic, new.key, new.headers) == (old.topic, old.key, old.headers)
        assert new.value is not None and old.value is not None
        assert orjson.loads(new.value) == orjson.loads(old.value)
        assert decode(consumed(new), wire) == decode(consumed(old), wire)
        same_bytes += new.value == old.value
    by_id = {e.event_id: e for e in events}
    for row in rows:
        event = decode(consumed(to_message(row)), wire_of(row))
        original = by_id[event.event_id]
        assert (event.event_type, event.payload, event.key, event.created_at, event.headers) == (
            original.event_type,
            original.payload,
            original.key,
            original.created_at,
            original.headers,
        )
    # Only jsonb's whitespace differs ({"a": 1} for {"a":1}), so the empty payload's records match byte
    # for byte; the count shows it in the output.
    print(f"\n[outbox wire] {len(rows)} records decode as before; {same_bytes} byte-identical")
    assert same_bytes >= 4


async def test_relay_publishes_the_payload_as_stored(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("videos.events")
    event = Event("video.uploaded", PAYLOADS[3] | PAYLOADS[2], key="v1", headers=TRACE)
    async with db.unit_of_work() as uow:
        await outbox.add(uow, event, name)
        await uow.commit()
    log = await broker.log(name)
    async with running(new_relay(db, await broker.producer())):
        [got] = await log.read(1)
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, what="row marked")
    decoded = decode(got, "envelope")
    assert (decoded.event_id, decoded.event_type, decoded.payload, decoded.created_at) == (
        event.event_id,
        event.event_type,
        event.payload,
        event.created_at,
    )
    assert decoded.headers == TRACE
    await log.close()
