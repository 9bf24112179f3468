"""One deferred call on the running event loop for any number of requests for it: what the hot paths
use to move per-request work (counts, access lines) out of the request and do it once per turn or
once a second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CallSoon:
    """`fn` called once on the running loop — at its next turn, or `delay_s` later — however many
    times `request()` is called before it runs; called at once when no loop runs.

    While a call is pending on a running loop, `request()` reads two attributes and returns: it does
    not ask asyncio for the running loop, which costs a system call each time (CPython compares the
    process id with the loop's to notice a fork). A pending call on a loop that stopped or closed
    before it ran is forgotten and the next request schedules anew."""

    __slots__ = ("_delay_s", "_fn", "_on")

    def __init__(self, fn: Callable[[], object], delay_s: float | None = None) -> None:
        self._fn = fn
        self._delay_s = delay_s
        self._on: asyncio.AbstractEventLoop | None = None  # the loop the pending call is on

    def request(self) -> None:
        on = self._on
        if on is not None and on.is_running():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing would run it later
            self._on = None
            self._fn()
            return
        self._on = loop
        if self._delay_s is None:
            loop.call_soon(self._run)
        else:
            loop.call_later(self._delay_s, self._run)

    def _run(self) -> None:
        self._on = None
        self._fn()
