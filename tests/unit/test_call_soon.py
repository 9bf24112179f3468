"""keel.core.soon.CallSoon: one deferred call for any number of requests, on the loop that runs."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.core.soon import CallSoon
from tests.support.eventually import eventually


class Calls:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1

    async def reach(self, count: int) -> None:
        await eventually(lambda: self.count, until=lambda c: c >= count, timeout_s=2, what=f"call {count}")
        assert self.count == count


async def test_many_requests_in_a_turn_make_one_call_at_the_next_turn() -> None:
    calls = Calls()
    soon = CallSoon(calls)
    for _ in range(100):
        soon.request()
    assert calls.count == 0  # not inside the request
    await calls.reach(1)
    soon.request()  # after the call ran: a new one
    await calls.reach(2)


async def test_a_delayed_call_runs_once_after_its_delay() -> None:
    calls = Calls()
    soon = CallSoon(calls, delay_s=0.05)
    began = time.monotonic()
    soon.request()
    soon.request()
    assert calls.count == 0
    await calls.reach(1)
    assert time.monotonic() - began >= 0.05


def test_without_a_running_loop_the_call_is_made_at_once() -> None:
    calls = Calls()
    soon = CallSoon(calls, delay_s=10)
    soon.request()
    soon.request()
    assert calls.count == 2


def test_a_call_left_pending_on_a_loop_that_closed_is_made_on_the_next_loop() -> None:
    calls = Calls()
    soon = CallSoon(calls, delay_s=0.01)
    first = asyncio.new_event_loop()
    first.run_until_complete(_request(soon))  # returns before the delay: the call stays pending
    first.close()
    assert calls.count == 0
    asyncio.run(_request_and_wait(soon, calls))
    assert calls.count == 1
    soon.request()  # no loop runs now
    assert calls.count == 2


async def test_while_a_call_is_pending_a_request_does_not_ask_for_the_running_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asking costs a system call (CPython checks the process id against the loop's): the point.
    calls = Calls()
    soon = CallSoon(calls)
    asked = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal asked
        asked += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    for _ in range(1_000):
        soon.request()
    assert asked == 1
    await calls.reach(1)


async def _request(soon: CallSoon) -> None:
    soon.request()


async def _request_and_wait(soon: CallSoon, calls: Calls) -> None:
    soon.request()
    await calls.reach(1)
