"""The collector as served processes set it after start-up."""

from __future__ import annotations

import gc

from keel.core import heap


def test_settle_freezes_what_start_up_built_and_raises_the_young_threshold():
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0  # the modules imported so far, at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
