"""Chaos suites: sizes scale with KEEL_CHAOS_SCALE (1 in CI; `make chaos` runs them larger)."""

from __future__ import annotations

import os

import pytest


def chaos_scale() -> int:
    return max(1, int(os.environ.get("KEEL_CHAOS_SCALE", "1") or "1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
