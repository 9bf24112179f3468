"""The HTTP golden signals counted in plain numbers (keel.core.metrics.RequestSeries): what reaches the
registry is what prometheus_client's own counter and histogram would hold for the same requests."""

from __future__ import annotations

import random
import uuid

import pytest
from prometheus_client import CollectorRegistry, Histogram

from keel.core import metrics
from keel.core.metrics import HTTP_LATENCY, HTTP_REQUESTS, LATENCY_BUCKETS, REGISTRY, request_series
from keel.core.soon import CallSoon
from tests.support.eventually import eventually


def _route() -> str:
    return f"/series/{uuid.uuid4().hex[:8]}"


def _key(name: str, labels: dict[str, str]) -> str:
    """A sample's name, with its bucket's bound for a histogram bucket."""
    return name + (f"{{le={labels['le']}}}" if "le" in labels else "")


def _samples(route: str) -> dict[str, float]:
    """The registry's samples of the route's series (collected the way a scrape collects them)."""
    labels = {"method": "GET", "route": route, "status": "200"}
    out: dict[str, float] = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if {k: v for k, v in s.labels.items() if k != "le"} == labels and not s.name.endswith("_created"):
                out[_key(s.name, s.labels)] = s.value
    return out


def _reference(latencies: list[float]) -> dict[str, float]:
    """prometheus_client's own histogram and count for the same latencies."""
    histogram = Histogram("ref", "", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for latency in latencies:
        histogram.observe(latency)
    out = {"http_requests_total": float(len(latencies))}
    for family in histogram.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[_key(s.name.replace("ref", "http_request_duration_seconds"), s.labels)] = s.value
    return out


def test_a_scrape_reads_what_prometheus_client_would_have_counted() -> None:
    route = _route()
    rng = random.Random(7)
    # Bounds exactly, between them, beyond the last one, and zero.
    latencies = [*LATENCY_BUCKETS, 0.0, 11.0, *(rng.uniform(0, 0.3) for _ in range(500))]
    series = request_series("GET", route, 200)
    for latency in latencies:
        series.observe(latency)

    got = _samples(route)

    want = _reference(latencies)
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want), (got, want)
    assert _samples(route) == got  # moved once: a second scrape adds nothing


async def test_on_a_loop_the_counts_reach_their_series_within_the_flush_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "_flush", CallSoon(metrics.flush_counts, 0.05))
    route = _route()
    series = request_series("GET", route, 200)
    counter = HTTP_REQUESTS.labels("GET", route, "200")
    histogram = HTTP_LATENCY.labels("GET", route, "200")

    def held() -> tuple[float, float]:
        # The children themselves, not the registry (whose collection would move the counts first).
        count = next(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
        total = next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_sum"))
        return count, total

    for _ in range(3):
        series.observe(0.002)
    assert held() == (0.0, 0.0)  # counted, not moved yet

    await eventually(
        held, until=lambda h: h == pytest.approx((3.0, 0.006)), timeout_s=2, what="the counts moved"
    )


def test_outside_a_loop_a_count_reaches_its_series_at_once() -> None:
    route = _route()
    request_series("GET", route, 200).observe(0.5)

    counter = HTTP_REQUESTS.labels("GET", route, "200")
    assert [s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")] == [1.0]
