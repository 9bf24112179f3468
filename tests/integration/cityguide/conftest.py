"""Running cityguide services (the real app and its lifespan) for tests."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import httpx
from fastapi import FastAPI

from keel.core.service import ServiceSpec
from keel.core.settings import Settings
from tests.support.serving import serving_app

READER = {"X-User-Id": "cityguide-reader"}


def serving(
    specs: Sequence[ServiceSpec], settings: Settings, *, embedded: bool = False
) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
    """The services running in one app on `settings`, and a client talking to it as a user (reads of
    workflows and prefetch pages need an authenticated caller)."""
    return serving_app(specs, settings, embedded=embedded, headers=READER)
