"""Runs background workers for the life of a process and restarts one that crashes, with backoff,
so a single failure is logged and healed instead of silently stopping event flow."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from keel.core.logging import REPEATS
from keel.core.service import Worker

log = logging.getLogger("keel.supervisor")


class Supervisor:
    def __init__(self, workers: Sequence[Worker], *, max_backoff_s: float = 30.0) -> None:
        self.workers = list(workers)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._max_backoff_s = max_backoff_s
        self.restarts: dict[str, int] = {}

    def start(self) -> None:
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._keep(worker), name=f"worker:{worker.name}"))

    async def _keep(self, worker: Worker) -> None:
        failures = 0
        while not self._stopping:
            try:
                await worker.run()
                if self._stopping:
                    return
                # A worker runs until stopped: one that returns on its own would stop event flow.
                raise RuntimeError(f"worker {worker.name} returned without being stopped")
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                self.restarts[worker.name] = self.restarts.get(worker.name, 0) + 1
                delay = min(self._max_backoff_s, 0.5 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                log.exception("worker %s crashed; restarting in %.1fs", worker.name, delay, extra=REPEATS)
                await asyncio.sleep(delay)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to finish its in-flight work; cancel what has not stopped by the deadline."""
        self._stopping = True
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            log.warning("worker %s did not stop within %.0fs; cancelling", task.get_name(), timeout_s)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
