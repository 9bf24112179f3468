"""The supervisor keeps every worker running for the life of the process: one that crashes, or whose
`run()` returns without being stopped (event flow would quietly end), is restarted with a log line;
`stop()` asks each to finish and returns."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keel.core.supervisor import Supervisor
from tests.support.eventually import eventually


class Flaky:
    """Returns (or raises) on its first `early` runs, then runs until stopped."""

    def __init__(self, name: str, early: int, *, crash: bool) -> None:
        self.name, self.early, self.crash = name, early, crash
        self.runs = 0
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.early:
            if self.crash:
                raise RuntimeError("boom")
            return
        await self.stopped.wait()

    async def stop(self) -> None:
        self.stopped.set()


async def test_a_worker_that_returns_or_crashes_is_restarted_and_both_stop_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    returns, crashes = Flaky("returns", 2, crash=False), Flaky("crashes", 1, crash=True)
    supervisor = Supervisor([returns, crashes], max_backoff_s=0.01)
    with caplog.at_level(logging.ERROR, logger="keel.supervisor"):
        supervisor.start()
        await eventually(lambda: (returns.runs, crashes.runs), until=lambda r: r == (3, 2), timeout_s=5)
        await asyncio.wait_for(supervisor.stop(timeout_s=5), 10)
    assert supervisor.restarts == {"returns": 2, "crashes": 1}
    said = [r.getMessage() for r in caplog.records]
    assert sum("worker returns crashed" in m for m in said) == 2, said
    assert any("returned without being stopped" in (r.exc_text or "") for r in caplog.records), said
    assert (returns.runs, crashes.runs) == (3, 2), "stopped: not started again"
