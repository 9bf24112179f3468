"""The orchestrator's own metric (job duration and consumer lag come from the core)."""

from __future__ import annotations

from prometheus_client import Histogram

ROUTE_TO_FIRST_AUDIO = Histogram(
    "route_to_first_audio_seconds",
    "From route.confirmed to the route's first successful tts.completed",
    buckets=(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
