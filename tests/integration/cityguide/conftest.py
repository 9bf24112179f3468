"""Running cityguide services (the real app and its lifespan) for tests."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from fastapi import FastAPI

from keel.core.service import ServiceSpec
from keel.core.settings import Settings
from tests.support.serving import serving_app

READER = {"X-User-Id": "cityguide-reader"}


@pytest.fixture(autouse=True)
def unlimited_workflow_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests poll workflows as fast as they answer: the per-caller read limits (tested in
    tests/security) would answer a read right after a poll with 429."""
    monkeypatch.setenv("WORKFLOW_READ_LIMIT", "")
    monkeypatch.setenv("WORKFLOW_READ_ADDRESS_LIMIT", "")


def serving(
    specs: Sequence[ServiceSpec], settings: Settings, *, embedded: bool = False
) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
    """The services running in one app on `settings`, and a client talking to it as a user (reads of
    workflows and prefetch pages need an authenticated caller)."""
    return serving_app(specs, settings, embedded=embedded, headers=READER)
