"""Wait on a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    probe: Callable[[], Awaitable[Any] | Any],
    *,
    until: Callable[[Any], bool],
    timeout_s: float = 5.0,
    what: str = "",
    interval_s: float = 0.005,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `probe` (sync or async) every `interval_s` until `until(result)` holds; fail with the
    last result after `timeout_s`. A probe raising one of `retry_on` counts as not there yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = probe()
            if inspect.isawaitable(result):
                result = await result
        except retry_on as exc:
            result = exc
        else:
            if until(result):
                return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not reached within {timeout_s}s; last: {result!r}")
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], Any],
    *,
    until: Callable[[Any], bool],
    timeout_s: float = 5.0,
    what: str = "",
    interval_s: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """`eventually` for code outside an event loop (fixtures starting servers); a probe raising one of
    `retry_on` counts as not there yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = probe()
        except retry_on as exc:
            result = exc
        else:
            if until(result):
                return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not reached within {timeout_s}s; last: {result!r}")
        time.sleep(interval_s)
