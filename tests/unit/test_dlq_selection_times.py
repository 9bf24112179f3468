"""The time window of a replay or purge, as operators write it on `keel dlq`'s command line and the
operator API takes it: ISO 8601 with or without an offset, a time without one being UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import typer

from keel.core.bus import Message
from keel.core.consumer.dlq import dead_letter_record
from keel.ops.cli import instant
from keel.ops.records import DeadLetter, Selection

FAILED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def letter(minutes: int) -> DeadLetter:
    record = dead_letter_record(
        Message("orders", 0, minutes, b"k", b"{}", ()),
        RuntimeError("boom"),
        dlq_topic="orders.dlq",
        attempts=5,
        group_id="g",
        failed_at=FAILED + timedelta(minutes=minutes),
    )
    return DeadLetter(Message("orders.dlq", 0, minutes, record.key, record.value, record.headers))


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("2026-12-01T12:05Z", datetime(2026, 12, 1, 12, 5, tzinfo=UTC)),
        ("2026-12-01T00:00", datetime(2026, 12, 1)),
        ("2026-12-01", datetime(2026, 12, 1)),
        ("2026-12-01 15:05+03:00", datetime(2026, 12, 1, 15, 5, tzinfo=timezone(timedelta(hours=3)))),
    ],
)
def test_the_command_line_reads_iso_8601_as_operators_write_it(written: str, meant: datetime) -> None:
    assert instant(written) == meant


def test_a_time_that_is_not_iso_8601_is_refused_with_an_example() -> None:
    with pytest.raises(
        typer.BadParameter, match=r"'yesterday' is not an ISO 8601 .* e\.g\. 2026-12-01T00:00Z"
    ):
        instant("yesterday")


def test_a_window_without_an_offset_is_utc_and_one_with_an_offset_is_that_instant() -> None:
    letters = [letter(m) for m in (0, 5, 10, 20)]  # failed at 12:00, 12:05, 12:10, 12:20 UTC

    def taken(selection: Selection) -> list[int]:
        return [int(d.failed_at.minute) for d in letters if selection.matches(d)]

    naive = Selection(since=instant("2026-12-01T12:05"), until=instant("2026-12-01T12:15"))
    assert naive.since is not None and naive.since.tzinfo is UTC
    assert taken(naive) == [5, 10]
    assert taken(Selection(since=instant("2026-12-01 15:06+03:00"))) == [10, 20]
    assert taken(Selection(until=instant("2026-12-01"))) == []
