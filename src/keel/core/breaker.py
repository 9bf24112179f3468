"""Guards for an optional dependency (cache, rate-limit store): a circuit breaker and a throttled error log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class CircuitBreaker:
    """Stops calling a dependency that keeps failing, and lets one probe through every `reset_after_s`.

    Closed: every call goes through. After `failure_threshold` consecutive failures it opens: calls are
    refused at once (the caller degrades) instead of each paying a connect or socket timeout. Once
    `reset_after_s` has passed, `allow()` admits a single probe and pushes the next probe time out again,
    so a probe whose caller is cancelled (and never reports) only delays recovery, never blocks it.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_after_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_after_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._log = log or logging.getLogger("keel.breaker")
        self._failures = 0
        self._open = False
        self._next_probe_at = 0.0

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        if not self._open:
            return True
        now = self._clock()
        if now < self._next_probe_at:
            return False
        self._next_probe_at = now + self.reset_after_s
        return True

    def record_success(self) -> None:
        if self._open:
            self._log.warning("%s is back: circuit closed", self.name)
        self._open = False
        self._failures = 0

    def record_failure(self) -> None:
        self._failures += 1
        if self._open:
            return  # a failed probe: allow() already pushed the next probe out
        if self._failures >= self.failure_threshold:
            self._open = True
            self._next_probe_at = self._clock() + self.reset_after_s
            self._log.warning(
                "%s failed %d times in a row: circuit open, probing every %gs",
                self.name,
                self._failures,
                self.reset_after_s,
            )


class ThrottledErrorLog:
    """Logs a failing dependency at most once per `every_s`, with the number of failures in between.

    A dependency that is down fails on every request; one line per call would drown the log."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._what = what
        self._every_s = every_s
        self._clock = clock
        self._suppressed = 0
        self._last_at: float | None = None

    def error(self, exc: BaseException, action: str) -> None:
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self._every_s:
            self._suppressed += 1
            return
        self._log.warning(
            "%s unavailable during %s, degrading: %s: %s (%d similar failures not logged)",
            self._what,
            action,
            type(exc).__name__,
            exc,
            self._suppressed,
        )
        self._last_at = now
        self._suppressed = 0
