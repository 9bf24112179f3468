"""Prometheus metrics shared by every service: HTTP golden signals, jobs, consumers, outbox."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

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
    ["job", "outcome"],
    buckets=LATENCY_BUCKETS,
)
KAFKA_CONSUMER_LAG = Gauge(
    "kafka_consumer_lag", "Messages behind the partition end", ["group", "topic", "partition"]
)
EVENTS_CONSUMED = Counter(
    "events_consumed_total", "Events handled by consumers", ["group", "topic", "outcome"]
)
DLQ_MESSAGES = Counter("dlq_messages_total", "Messages sent to a dead-letter topic", ["topic", "reason"])
OUTBOX_LAG = Gauge("outbox_lag_seconds", "Age of the oldest unpublished outbox event")
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox events published", ["topic"])
OUTBOX_PENDING = Gauge("outbox_pending_events", "Outbox events not yet published")
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
    "dependency_up", "1 when the last readiness check of a dependency passed", ["dependency"]
)


def render_latest() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
