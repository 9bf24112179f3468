"""Events and their two wire formats.

`envelope`: the value is `{"event_id", "event_type", "created_at", "payload"}` (tickets, videos).
`bare`: the value is the payload itself and the envelope fields travel in headers
(`event-id`, `event-type`, `created-at`, `traceparent`) — the cityguide topics and `orders`.
A bare message from an outside producer may lack the headers; its handler dedupes by natural key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from keel.core.bus.message import Headers, Message, OutgoingMessage
from keel.core.telemetry import trace_headers

WireFormat = Literal["envelope", "bare"]
MAX_EVENT_BYTES = 1_000_000


class PoisonMessage(Exception):
    """A message that no retry can fix: it goes to the dead-letter topic at once, with this reason."""


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Event:
    event_type: str
    payload: dict[str, Any]
    key: str | None = None
    event_id: str = field(default_factory=_new_id)
    created_at: datetime = field(default_factory=_now)
    # Extra headers carried alongside, not part of the payload: the trace context of where the event
    # was built (every producer gets it for free), or of the event that caused it (`trace_headers`).
    headers: Headers = field(default_factory=trace_headers)
    # False when an outside producer sent no event id and one was derived or is missing.
    has_event_id: bool = True


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def encode(event: Event, topic: str, wire: WireFormat) -> OutgoingMessage:
    key = event.key.encode() if event.key is not None else None
    created = event.created_at.isoformat().replace("+00:00", "Z")
    if wire == "envelope":
        value = dumps(
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "created_at": created,
                "payload": event.payload,
            }
        )
        headers = event.headers
    else:
        value = dumps(event.payload)
        headers = (
            ("event-id", event.event_id.encode()),
            ("event-type", event.event_type.encode()),
            ("created-at", created.encode()),
            *event.headers,
        )
    return OutgoingMessage(topic=topic, value=value, key=key, headers=headers)


def load_json_object(raw: bytes | None) -> dict[str, Any]:
    """Strict JSON: an object, valid UTF-8, no NaN/Infinity, bounded size; anything else is poison."""
    if raw is None:
        raise PoisonMessage("tombstone: message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise PoisonMessage(f"value too large: {len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PoisonMessage(f"expected a JSON object, got {type(data).__name__}")
    return data


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise PoisonMessage("created_at must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PoisonMessage(f"created_at is not ISO-8601: {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _header_text(message: Message, name: str) -> str | None:
    raw = message.header(name)
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise PoisonMessage(f"header {name} is not UTF-8") from None


def decode(message: Message, wire: WireFormat, *, default_type: str | None = None) -> Event:
    """Turn a consumed message into an Event, or raise PoisonMessage saying why it cannot be."""
    data = load_json_object(message.value)
    key = message.key.decode(errors="replace") if message.key is not None else None
    passthrough = tuple((k, v) for k, v in message.headers if k == "traceparent")
    if wire == "envelope":
        missing = [f for f in ("event_id", "event_type", "payload") if f not in data]
        if missing:
            raise PoisonMessage(f"envelope lacks {', '.join(missing)}")
        payload, event_id, event_type = data["payload"], data["event_id"], data["event_type"]
        if not isinstance(payload, dict):
            raise PoisonMessage("envelope payload must be a JSON object")
        if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
            raise PoisonMessage("event_id and event_type must be non-empty strings")
        created = _parse_time(data["created_at"]) if "created_at" in data else _now()
        return Event(event_type, payload, key, event_id, created, passthrough)

    event_id = _header_text(message, "event-id")
    event_type = _header_text(message, "event-type") or default_type or message.topic
    created_raw = _header_text(message, "created-at")
    created = _parse_time(created_raw) if created_raw else _now()
    return Event(
        event_type,
        data,
        key,
        event_id or f"{message.topic}:{message.partition}:{message.offset}",
        created,
        passthrough,
        has_event_id=event_id is not None,
    )
