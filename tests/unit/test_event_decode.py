"""The envelope's `created_at` as `decode` reads it: parsed when there, now when absent, poison when
it is there and not a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from keel.core.bus.message import Message
from keel.core.events import PoisonMessage, decode


def envelope(**fields: Any) -> Message:
    value = {"event_id": "e-1", "event_type": "ticket.created", "payload": {"ticket_id": "t-1"}, **fields}
    return Message("tickets.events", 0, 7, b"t-1", orjson.dumps(value))


def test_a_created_at_is_parsed() -> None:
    event = decode(envelope(created_at="2026-12-04T10:11:12.123456Z"), "envelope")

    assert event.created_at == datetime(2026, 12, 4, 10, 11, 12, 123456, tzinfo=UTC)


def test_a_created_at_without_an_offset_is_read_as_utc() -> None:
    event = decode(envelope(created_at="2026-12-04T10:11:12"), "envelope")

    assert event.created_at == datetime(2026, 12, 4, 10, 11, 12, tzinfo=UTC)


def test_an_envelope_without_created_at_is_dated_when_read() -> None:
    before = datetime.now(UTC)
    event = decode(envelope(), "envelope")

    assert before <= event.created_at <= datetime.now(UTC)


@pytest.mark.parametrize("value", [None, 17, "yesterday", ""])
def test_a_created_at_that_is_not_a_time_is_poison(value: object) -> None:
    with pytest.raises(PoisonMessage, match="created_at"):
        decode(envelope(created_at=value), "envelope")
