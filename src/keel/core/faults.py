"""Named crash points, so tests can kill a process in an exact window (e.g. after the DB commit,
before the offset commit). Off unless KEEL_CRASH_POINTS names the point; costs one set lookup."""

from __future__ import annotations

import os

_ENABLED = frozenset(p for p in os.environ.get("KEEL_CRASH_POINTS", "").split(",") if p)


def crash_point(name: str) -> None:
    """Die at once, like `kill -9`, when `name` is listed in KEEL_CRASH_POINTS."""
    if name in _ENABLED:
        os._exit(137)
