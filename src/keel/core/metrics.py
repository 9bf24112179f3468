"""Prometheus metrics shared by every service: HTTP golden signals, jobs, consumers, outbox."""

from __future__ import annotations

import os

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

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

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
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
