"""The circuit breaker and throttled log that guard optional dependencies, on a hand-driven clock."""

from __future__ import annotations

import logging

import pytest

from keel.core.breaker import CircuitBreaker, ThrottledErrorLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_stays_closed_below_the_failure_threshold() -> None:
    breaker = CircuitBreaker("dep", failure_threshold=3, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow() and not breaker.is_open


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker("dep", failure_threshold=3, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert not breaker.is_open


def test_breaker_opens_after_the_threshold_and_refuses_until_the_reset_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep", failure_threshold=2, reset_after_s=3.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.is_open
    clock.now += 2.9
    assert not breaker.allow()


def test_an_open_breaker_lets_one_probe_through_per_reset_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep", failure_threshold=1, reset_after_s=3.0, clock=clock)
    breaker.record_failure()
    clock.now += 3.0
    assert breaker.allow()
    assert not breaker.allow()  # the probe is out; everyone else still degrades
    clock.now += 3.0
    assert breaker.allow()  # a probe that never reported (cancelled) only delays the next one


def test_a_failed_probe_keeps_it_open_and_a_successful_one_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep", failure_threshold=1, reset_after_s=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_success()
    assert not breaker.is_open and breaker.allow() and breaker.allow()


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("dep", failure_threshold=0)


def test_throttled_log_writes_once_per_period_with_the_count_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttled = ThrottledErrorLog(logging.getLogger("keel.test"), "redis", every_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="keel.test"):
        for _ in range(50):
            throttled.error(ConnectionError("refused"), "get")
        clock.now += 10
        throttled.error(ConnectionError("refused"), "get")
    assert len(caplog.records) == 2
    assert "49 similar failures not logged" in caplog.records[1].getMessage()
