"""The `keel up` status line reads rates and lags from the metrics registry."""

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge

from keel.core.status import StatusLine
from tests.support.eventually import eventually


def _registry():
    registry = CollectorRegistry()
    consumed = Counter("events_consumed_total", "x", ["group"], registry=registry)
    published = Counter("outbox_published_total", "x", ["topic"], registry=registry)
    lag = Gauge("outbox_lag_seconds", "x", registry=registry)
    return registry, consumed, published, lag


def test_rates_are_computed_from_counter_deltas_across_labels():
    registry, consumed, published, lag = _registry()
    status = StatusLine(print, registry=registry)
    before = status.snapshot()
    consumed.labels("a").inc(30)
    consumed.labels("b").inc(20)
    published.labels("t").inc(40)
    lag.set(1.5)
    line = StatusLine.render(before, status.snapshot(), elapsed_s=10)
    assert line is not None
    assert "events 5/s" in line
    assert "published 4/s" in line
    assert "outbox lag 1.5s" in line


def test_nothing_is_printed_when_nothing_moved():
    registry, *_ = _registry()
    status = StatusLine(print, registry=registry)
    snap = status.snapshot()
    assert StatusLine.render(snap, snap, elapsed_s=5) is None


async def test_the_worker_prints_a_line_after_activity_and_stops():
    registry, consumed, _, _ = _registry()
    lines: list[str] = []
    status = StatusLine(lines.append, interval_s=0.01, registry=registry)
    task = asyncio.create_task(status.run())
    await asyncio.sleep(0)  # the worker takes its first snapshot
    consumed.labels("a").inc(5)
    await eventually(lambda: lines, until=bool, timeout_s=5, what="a status line")
    await status.stop()
    await asyncio.wait_for(task, 2)
    assert lines and lines[0].startswith("events ")
