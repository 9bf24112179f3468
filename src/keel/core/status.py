"""The live line `keel up` prints while it runs: what flows through the platform, read from our own
Prometheus metrics (no second bookkeeping), printed only when something moved."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

Printer = Callable[[str], None]


def _total(registry: CollectorRegistry, metric: str, sample: str) -> float:
    for family in registry.collect():
        if family.name == metric:
            return sum(s.value for s in family.samples if s.name == sample)
    return 0.0


def _value(registry: CollectorRegistry, metric: str) -> float:
    return _total(registry, metric, metric)


class StatusLine:
    """A worker: every `interval_s`, one line of rates and lags, when anything changed."""

    name = "status-line"

    def __init__(
        self, printer: Printer, *, interval_s: float = 5.0, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self._print = printer
        self._interval_s = interval_s
        self._registry = registry
        self._stopped = asyncio.Event()

    def snapshot(self) -> dict[str, float]:
        r = self._registry
        return {
            "consumed": _total(r, "events_consumed", "events_consumed_total"),
            "published": _total(r, "outbox_published", "outbox_published_total"),
            "requests": _total(r, "http_requests", "http_requests_total"),
            "dlq": _total(r, "dlq_messages", "dlq_messages_total"),
            "outbox_lag": _value(r, "outbox_lag_seconds"),
            "outbox_pending": _value(r, "outbox_pending_events"),
        }

    @staticmethod
    def render(before: dict[str, float], after: dict[str, float], elapsed_s: float) -> str | None:
        def rate(key: str) -> float:
            return (after[key] - before[key]) / elapsed_s

        moved = any(after[k] != before[k] for k in ("consumed", "published", "requests", "dlq"))
        if not moved and after["outbox_pending"] == 0:
            return None
        return (
            f"events {rate('consumed'):.0f}/s · published {rate('published'):.0f}/s · "
            f"http {rate('requests'):.0f} req/s · outbox lag {after['outbox_lag']:.1f}s "
            f"({after['outbox_pending']:.0f} pending) · dead letters {after['dlq']:.0f}"
        )

    async def run(self) -> None:
        before, since = self.snapshot(), time.monotonic()
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval_s)
            after, now = self.snapshot(), time.monotonic()
            line = self.render(before, after, now - since)
            if line is not None:
                self._print(line)
            before, since = after, now

    async def stop(self) -> None:
        self._stopped.set()
