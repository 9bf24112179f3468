"""The orchestrator handles a fetched batch in one transaction, in route order: every batch takes its
route locks in the same order (no lock cycle between two batches), and one route's events keep the
order they came in."""

from __future__ import annotations

from typing import Any

from keel.cityguide.orchestrator.spec import in_route_order
from keel.core.events import Event


async def test_a_batch_is_handled_in_route_order_keeping_each_routes_own_order() -> None:
    arrived = [
        Event("tts.completed", {"route_id": route, "story_id": f"{route}-s{n}"})
        for route, n in [("r3", 1), ("r1", 1), ("r3", 2), ("r2", 1), ("r1", 2), ("r3", 3)]
    ]
    handled: list[str] = []

    async def handle(event: Event, uow: Any) -> None:
        handled.append(event.payload["story_id"])

    uow: Any = object()  # the handler never touches it here; the transaction is the runner's
    await in_route_order(handle)(arrived, uow)

    assert handled == ["r1-s1", "r1-s2", "r2-s1", "r3-s1", "r3-s2", "r3-s3"]
    print(f"\n[orchestrator batch] {len(arrived)} events of 3 routes handled as {handled}")
