"""Keeps `dlq_pending{topic}` current in the process that serves the console, for the alert rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from keel.core.bus.errors import BusError
from keel.ops.dlq import DeadLetterOps

log = logging.getLogger("keel.ops")


class DeadLetterGauge:
    """Counts each DLQ topic's pending records every `interval_s` (offsets only, no record read)."""

    name = "dlq-pending-gauge"

    def __init__(self, dead_letters: DeadLetterOps, interval_s: float) -> None:
        self._dead_letters = dead_letters
        self._interval_s = interval_s
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        self._stopped.clear()
        while not self._stopped.is_set():
            for topic in self._dead_letters.topics:
                try:
                    await self._dead_letters.pending_count(topic)
                except BusError as exc:
                    # The broker away: the gauge keeps its last value, the next round tries again.
                    log.warning("dlq_pending{topic=%s} not refreshed: %s", topic, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
