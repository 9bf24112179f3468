"""Lines that repeat while a dependency is down pass at a bounded rate and say how many were left out;
every other line passes untouched."""

from __future__ import annotations

import logging

from keel.core.logging import REPEATS, RepeatThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, repeats: bool = False) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
    if repeats:
        rec.__dict__.update(REPEATS)
    return rec


def test_aiokafka_reconnect_errors_pass_once_per_window_with_the_count_left_out() -> None:
    clock = Clock()
    throttle = RepeatThrottle(10.0, clock=clock)
    lines = []
    for second in range(25):  # an ERROR a second from aiokafka's connection logger, as in an outage
        clock.now = float(second)
        rec = record("aiokafka.conn", "Unable connect to node with id %s: %s", 1, "refused")
        if throttle.filter(rec):
            lines.append(rec.getMessage())
    assert lines == [
        "Unable connect to node with id 1: refused",
        "Unable connect to node with id 1: refused (9 more like it in the last 10s not logged)",
        "Unable connect to node with id 1: refused (9 more like it in the last 10s not logged)",
    ]


def test_marked_retry_lines_are_throttled_per_template_and_other_lines_pass() -> None:
    clock = Clock()
    throttle = RepeatThrottle(10.0, clock=clock)
    fetch = [
        throttle.filter(record("keel.consumer", "%s: fetch failed", "g", repeats=True)) for _ in range(5)
    ]
    other = [
        throttle.filter(record("keel.consumer", "%s: other failure", "g", repeats=True)) for _ in range(2)
    ]
    another = [
        throttle.filter(record("keel.consumer", "%s: fetch failed", "h", repeats=True)) for _ in range(2)
    ]
    plain = [throttle.filter(record("keel.consumer", "%s: fetch failed", "g")) for _ in range(5)]
    assert fetch == [True, False, False, False, False]
    assert other == [True, False]  # its own template, its own window
    assert another == [True, False]  # another consumer's failures are not hidden by the first one's
    assert all(plain)  # not marked, not aiokafka: never dropped
