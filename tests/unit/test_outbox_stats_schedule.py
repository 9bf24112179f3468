"""How often the relay counts its backlog: every report while it is small, once in RECOUNT_EVERY while
it is large (the count reads every pending row; the age is one index probe a shard)."""

from __future__ import annotations

from keel.core.outbox.relay import LARGE_BACKLOG, RECOUNT_EVERY, counts_this_report


def test_a_small_backlog_is_counted_at_every_report():
    assert all(counts_this_report(LARGE_BACKLOG - 1, report) for report in range(3 * RECOUNT_EVERY))


def test_a_large_backlog_is_counted_once_in_recount_every_reports():
    counted = [r for r in range(3 * RECOUNT_EVERY) if counts_this_report(LARGE_BACKLOG, r)]
    assert counted == [0, RECOUNT_EVERY, 2 * RECOUNT_EVERY]


def test_the_first_report_counts_whatever_came_before():
    assert counts_this_report(10**9, 0)
