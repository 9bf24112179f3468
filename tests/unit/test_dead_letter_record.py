"""The dead-letter record: the original record untouched, the reason in dlq-* headers."""

from __future__ import annotations

from datetime import UTC, datetime

from keel.core.bus.message import Message
from keel.core.consumer import dead_letter_record
from keel.core.consumer.dlq import MAX_ERROR_CHARS
from keel.core.events import PoisonMessage


def _message(headers: tuple[tuple[str, bytes], ...] = ()) -> Message:
    return Message("orders", 3, 41, b"order-1", b"\xff not json", headers)


def test_dead_letter_keeps_the_original_key_value_and_headers_and_adds_the_reason() -> None:
    original = _message((("traceparent", b"00-abc-def-01"), ("event-id", b"e1")))

    record = dead_letter_record(
        original,
        PoisonMessage("not valid JSON"),
        dlq_topic="orders.dlq",
        attempts=1,
        group_id="order-svc",
        failed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )

    assert (record.topic, record.key, record.value) == ("orders.dlq", b"order-1", b"\xff not json")
    assert record.headers[:2] == original.headers
    assert dict(record.headers[2:]) == {
        "dlq-original-topic": b"orders",
        "dlq-original-partition": b"3",
        "dlq-original-offset": b"41",
        "dlq-error": b"not valid JSON",
        "dlq-error-type": b"PoisonMessage",
        "dlq-attempts": b"1",
        "dlq-consumer-group": b"order-svc",
        "dlq-failed-at": b"2026-01-02T03:04:05Z",
    }


def test_dead_letter_error_is_truncated() -> None:
    record = dead_letter_record(
        _message(), RuntimeError("x" * 50_000), dlq_topic="d", attempts=5, group_id="g"
    )

    error = dict(record.headers)["dlq-error"].decode()
    assert len(error) == MAX_ERROR_CHARS and error.endswith("…")


def test_an_exception_without_a_message_is_named_by_its_repr() -> None:
    record = dead_letter_record(_message(), KeyError(), dlq_topic="d", attempts=5, group_id="g")

    assert dict(record.headers)["dlq-error"] == b"KeyError()"


def test_a_replayed_dead_letter_carries_one_current_reason_not_two() -> None:
    replayed = _message((("dlq-error", b"old reason"), ("dlq-attempts", b"5"), ("traceparent", b"tp")))

    record = dead_letter_record(replayed, RuntimeError("new"), dlq_topic="d", attempts=2, group_id="g")

    names = [k for k, _ in record.headers]
    assert names.count("dlq-error") == 1 and names.count("dlq-attempts") == 1
    assert dict(record.headers)["dlq-error"] == b"new"
    assert ("traceparent", b"tp") in record.headers
