"""The garbage collector as Keel's long-running processes set it once they have started."""

from __future__ import annotations

import gc

# A young collection every 10,000 net container allocations rather than the interpreter's 700: a
# consumer's batch (500 orders of ~30 objects, alive until it commits) went through several young and
# middle collections on its way; a request's objects die young and barely move the count.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what start-up built and set the thresholds. Modules, the app and its routes live as long
    as the process: frozen, they are left out of the collector's full passes, which otherwise scan
    them all (long pauses under the ticket create load, its p99: issue 7)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
