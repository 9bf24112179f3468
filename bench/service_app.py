"""A Keel service app for other servers (`--factory bench.service_app:service_app`): the same app `keel
serve SERVICE --api-only` builds, for bench/alternatives.py to compare servers on one hot path."""

from __future__ import annotations

import os
from typing import Any

from keel import services
from keel.core import heap
from keel.core.logging import setup_logging
from keel.core.runtime import build_app
from keel.core.settings import Settings


def service_app() -> Any:
    settings = Settings()
    setup_logging(settings.log_level)
    app = build_app([services.load(os.environ["KEEL_BENCH_SERVICE"])], settings, run_workers=False)
    heap.settle()  # as keel serve does
    return app
