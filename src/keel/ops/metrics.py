"""The dead-letter figures operators alert on (deploy/prometheus/alerts.yml)."""

from prometheus_client import Counter, Gauge

DLQ_REPLAYED = Counter("dlq_replayed_total", "Dead letters sent back to their source topic", ["topic"])
# Set whenever the console or `keel dlq` counts a topic; the console process refreshes it on a timer.
DLQ_PENDING = Gauge(
    "dlq_pending", "Dead letters neither replayed nor purged", ["topic"], multiprocess_mode="livemax"
)
