"""What a flow reports while it runs and what it ends with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

T = TypeVar("T")


class DemoFailure(Exception):
    """A flow saw something other than what the platform promises."""


class FlowSkipped(Exception):
    """A flow cannot run against this platform (e.g. it needs a broker nobody named)."""


# Told each step's text as the flow passes it.
StepReporter = Callable[[str], None]


@dataclass
class FlowResult:
    name: str
    steps: list[str] = field(default_factory=list)
    status: str = "pending"  # ok | failed | skipped
    detail: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


async def poll(
    probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, timeout_s: float, what: str
) -> T:
    """Ask again every 100 ms until `until` holds; DemoFailure with the last answer after the deadline."""
    last: T | None = None
    with anyio.move_on_after(timeout_s):
        while True:
            last = await probe()
            if until(last):
                return last
            await anyio.sleep(0.1)
    raise DemoFailure(f"{what} not reached within {timeout_s:.0f}s (last: {last!r})")
