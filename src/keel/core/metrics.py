"""Prometheus metrics shared by every service: HTTP golden signals, jobs, consumers, outbox."""

from __future__ import annotations

import atexit
import os
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from keel.core.soon import CallSoon

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# How long a count may wait in a RequestSeries or CountedLocally before it reaches the registry (a
# scrape of this process moves it at once; one of another worker process sees it within this).
COUNTS_FLUSH_S = 1.0


class RequestSeries:
    """One (method, route, status) series of the HTTP golden signals, counted on the event loop in
    plain numbers and moved into its prometheus_client children (the request counter, the latency
    histogram) once a second and before every collection of the registry.

    Each child's `inc` takes a lock and a histogram's `observe` walks its buckets: four locked
    increments a request, a measurable share of a cached GET's own work (bench/results/changes.md).
    Moving a second's worth at once writes the same values."""

    __slots__ = ("_buckets", "_count", "_counter", "_histogram", "_sum")

    def __init__(self, counter: Counter, histogram: Histogram) -> None:
        self._counter = counter
        self._histogram = histogram
        self._count = 0
        self._sum = 0.0
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: +Inf

    def observe(self, elapsed_s: float) -> None:
        self._count += 1
        self._sum += elapsed_s
        # The first bucket whose bound is >= elapsed_s, as Histogram.observe picks it.
        self._buckets[bisect_left(LATENCY_BUCKETS, elapsed_s)] += 1
        _flush.request()

    def flush(self) -> None:
        count = self._count
        if not count:
            return
        total, buckets = self._sum, self._buckets
        self._count, self._sum, self._buckets = 0, 0.0, [0] * len(buckets)
        self._counter.inc(count)
        # prometheus_client has no public way to add several observations at once: its own
        # per-bucket values and sum, which Histogram.observe increments one at a time.
        histogram = self._histogram
        histogram._sum.inc(total)
        for value, n in zip(histogram._buckets, buckets, strict=True):
            if n:
                value.inc(n)


class CountedLocally:
    """A counter child incremented on a hot path (a cache hit: once a request), counted in an int and
    moved into the child with the request series."""

    __slots__ = ("_child", "_count")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self._count = 0

    def inc(self, amount: int = 1) -> None:
        self._count += amount
        _flush.request()

    def flush(self) -> None:
        count = self._count
        if count:
            self._count = 0
            self._child.inc(count)


# Everything counted locally: the request series by their labels, the counters by their child.
_series: dict[tuple[str, str, int], RequestSeries] = {}
_counters: dict[int, CountedLocally] = {}


def request_series(method: str, route: str, status: int) -> RequestSeries:
    key = (method, route, status)
    series = _series.get(key)
    if series is None:
        labels = (method, route, str(status))
        series = _series[key] = RequestSeries(HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
    return series


def counted(child: Counter) -> CountedLocally:
    """`child` (a labelled counter) counted locally: one CountedLocally per child, which
    prometheus_client keeps for as long as the process runs."""
    local = _counters.get(id(child))
    if local is None:
        local = _counters[id(child)] = CountedLocally(child)
    return local


def flush_counts() -> None:
    """Everything counted locally so far into the registry."""
    for series in list(_series.values()):
        series.flush()
    for counter in list(_counters.values()):
        counter.flush()


_flush = CallSoon(flush_counts, COUNTS_FLUSH_S)


class _CountsFirst(Collector):
    """Registered before the metrics below: every collection of the default registry (a scrape,
    `get_sample_value`) first moves what was counted locally into its series."""

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        flush_counts()
        return ()


REGISTRY.register(_CountsFirst())
atexit.register(flush_counts)  # several worker processes: a stopped one's last second still counts

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests handled", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "Duration of one unit of background work",
    # Not `job`: Prometheus sets that label on every scraped series (the target) and would rename ours.
    ["task", "outcome"],
    buckets=LATENCY_BUCKETS,
)
# Gauges name how several worker processes (keel.core.processes) combine; ignored in one process.
KAFKA_CONSUMER_LAG = Gauge(
    "kafka_consumer_lag",
    "Messages behind the partition end",
    ["group", "topic", "partition"],
    multiprocess_mode="livemax",
)
EVENTS_CONSUMED = Counter(
    "events_consumed_total", "Events handled by consumers", ["group", "topic", "outcome"]
)
# reason: queue_full (the exporter fell behind), refused (the collector answered 4xx), failed (the
# collector did not take the batch within the export timeout).
TRACE_SPANS_DROPPED = Counter(
    "trace_spans_dropped_total", "Spans that never reached the collector, by reason", ["reason"]
)
DLQ_MESSAGES = Counter("dlq_messages_total", "Messages sent to a dead-letter topic", ["topic", "reason"])
OUTBOX_LAG = Gauge(
    "outbox_lag_seconds", "Age of the oldest unpublished outbox event", multiprocess_mode="livemax"
)
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox events published", ["topic"])
OUTBOX_PENDING = Gauge(
    "outbox_pending_events", "Outbox events not yet published", multiprocess_mode="livemax"
)
CACHE_REQUESTS = Counter(
    "cache_requests_total",
    "Cache look-ups (hit, miss) and backend calls failed or skipped (error)",
    ["cache", "result"],
)
RATE_LIMIT_DECISIONS = Counter(
    "rate_limit_decisions_total",
    "Rate-limit checks by outcome (allowed, limited, failed_open)",
    ["limiter", "outcome"],
)
DEPENDENCY_UP = Gauge(
    "dependency_up",
    "1 when the last readiness check of a dependency passed",
    ["dependency"],
    multiprocess_mode="livemostrecent",
)


def render_latest() -> tuple[bytes, str]:
    """The exposition text and its content type. Under several worker processes (PROMETHEUS_MULTIPROC_DIR,
    set by keel.core.processes) every worker's values, summed per series, whichever worker answers."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    flush_counts()  # this process's counts into its files; the others' reach theirs within a second
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
