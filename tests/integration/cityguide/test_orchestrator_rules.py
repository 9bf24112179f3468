"""The orchestrator's workflow rules on real PostgreSQL: each handler called as the consumer runner
calls it (one committed unit of work), the outbox read back to see what it emitted."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from keel.cityguide import topics
from keel.cityguide.orchestrator.schemas import RestartableStep
from keel.cityguide.orchestrator.service import OrchestratorService
from keel.core.errors import Conflict, NotFound
from keel.core.events import Event
from keel.core.outbox import Outbox
from tests.integration.cityguide.support import (
    deliver,
    deliver_batch,
    emitted,
    stories,
    tts_failed,
    tts_ok,
)


@pytest.fixture
def service(db) -> OrchestratorService:
    return OrchestratorService(db, Outbox(4))


@pytest.fixture
def route_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


async def _confirm(db, service, route_id):
    await deliver(
        db, service.on_route_confirmed, topics.ROUTE_CONFIRMED, {"route_id": route_id, "mode": "walk"}
    )


async def _stories(db, service, route_id, count=3):
    payload = {"route_id": route_id, "lang": "ru", "stories": stories(route_id, count)}
    await deliver(db, service.on_stories_generated, topics.STORY_GENERATED, payload)


async def _tts(db, service, payload):
    await deliver(db, service.on_tts_completed, topics.TTS_COMPLETED, payload)


def _step(view, name):
    return next(s for s in view.steps if s.name == name)


async def test_route_confirmed_creates_one_workflow_and_one_story_command_even_when_repeated(
    db, service, route_id
):
    await _confirm(db, service, route_id)
    await _confirm(db, service, route_id)

    view = await service.get(route_id)
    assert (view.status, view.mode, view.lang) == ("running", "walk", "ru")
    assert [(s.name, s.status, s.attempts) for s in view.steps] == [
        ("story_generate", "running", 1),
        ("tts_batch", "pending", 0),
        ("delivery", "pending", 0),
    ]
    commands = await emitted(db, topics.STORY_GENERATE)
    assert len(commands) == 1
    key, payload = commands[0]
    assert key == route_id
    assert payload["route_id"] == route_id and payload["lang"] == "ru" and payload["route"]["mode"] == "walk"


async def test_stories_become_one_tts_request_per_story_in_order_and_a_duplicate_emits_nothing(
    db, service, route_id
):
    await _confirm(db, service, route_id)
    await _stories(db, service, route_id, 4)
    await _stories(db, service, route_id, 4)

    requests = await emitted(db, topics.TTS_REQUESTED)
    assert [p["story_id"] for _, p in requests] == [f"{route_id}-{n}" for n in range(4)]
    assert [k for k, _ in requests] == [p["story_id"] for _, p in requests]
    assert all(p["text"].startswith("История") and p["attempt"] == 1 for _, p in requests)
    view = await service.get(route_id)
    assert (_step(view, "story_generate").status, _step(view, "tts_batch").status) == ("completed", "running")
    assert [j.position for j in view.jobs] == [0, 1, 2, 3]


async def test_all_tts_completed_in_any_order_emits_delivery_prefetch_in_story_order(db, service, route_id):
    await _confirm(db, service, route_id)
    await _stories(db, service, route_id, 3)
    for n in (2, 0, 1):
        await _tts(db, service, tts_ok(route_id, f"{route_id}-{n}"))
    await _tts(db, service, tts_ok(route_id, f"{route_id}-1"))  # duplicate after completion

    view = await service.get(route_id)
    assert view.status == "completed" and view.completed_at is not None
    assert [(s.status, s.attempts) for s in view.steps] == [("completed", 1)] * 3
    prefetch = await emitted(db, topics.DELIVERY_PREFETCH)
    assert prefetch == [
        (route_id, {"route_id": route_id, "next_audio": [f"a-{route_id}-{n}-1" for n in range(3)]})
    ]


async def test_tts_completed_before_the_stories_is_parked_and_applied_when_they_arrive(db, service, route_id):
    await _confirm(db, service, route_id)
    await _tts(db, service, tts_ok(route_id, f"{route_id}-0"))
    await _stories(db, service, route_id, 2)

    view = await service.get(route_id)
    assert [j.status for j in view.jobs] == ["completed", "pending"]
    await _tts(db, service, tts_ok(route_id, f"{route_id}-1"))
    assert (await service.get(route_id)).status == "completed"


async def test_events_before_route_confirmed_are_parked_and_the_flow_completes(db, service, route_id):
    await _stories(db, service, route_id, 2)
    await _tts(db, service, tts_ok(route_id, f"{route_id}-1"))
    with pytest.raises(NotFound):
        await service.get(route_id)

    await _confirm(db, service, route_id)
    view = await service.get(route_id)
    assert [j.status for j in view.jobs] == ["pending", "completed"]
    await _tts(db, service, tts_ok(route_id, f"{route_id}-0"))
    assert (await service.get(route_id)).status == "completed"
    assert len(await emitted(db, topics.DELIVERY_PREFETCH)) == 1


async def test_a_failed_tts_job_fails_the_batch_and_restart_requests_only_unfinished_jobs(
    db, service, route_id
):
    await _confirm(db, service, route_id)
    await _stories(db, service, route_id, 3)
    await _tts(db, service, tts_ok(route_id, f"{route_id}-0"))
    await _tts(db, service, tts_failed(route_id, f"{route_id}-1"))

    view = await service.get(route_id)
    assert view.status == "failed"
    batch = _step(view, "tts_batch")
    assert batch.status == "failed" and batch.error == f"story {route_id}-1: synth broke"

    view = await service.restart(route_id, RestartableStep.TTS_BATCH, "ops-anna", "espeak fixed")
    assert view.status == "running"
    assert (_step(view, "tts_batch").status, _step(view, "tts_batch").attempts) == ("pending", 2)
    assert [(r.step, r.attempt, r.requested_by, r.reason) for r in view.restarts] == [
        ("tts_batch", 2, "ops-anna", "espeak fixed")
    ]
    again = [p for _, p in (await emitted(db, topics.TTS_REQUESTED))[3:]]
    assert [(p["story_id"], p["attempt"]) for p in again] == [(f"{route_id}-1", 2), (f"{route_id}-2", 2)]

    await _tts(db, service, tts_failed(route_id, f"{route_id}-2", attempt=1))  # stale: attempt 1
    await _tts(db, service, tts_ok(route_id, f"{route_id}-1", attempt=2))
    assert (await service.get(route_id)).status == "running"
    await _tts(db, service, tts_ok(route_id, f"{route_id}-2", attempt=2))

    view = await service.get(route_id)
    assert view.status == "completed"
    assert (_step(view, "tts_batch").status, _step(view, "tts_batch").attempts) == ("completed", 2)
    _, prefetch = (await emitted(db, topics.DELIVERY_PREFETCH))[0]
    assert prefetch["next_audio"] == [f"a-{route_id}-0-1", f"a-{route_id}-1-2", f"a-{route_id}-2-2"]


async def test_restart_of_an_unknown_route_is_not_found_and_of_a_completed_batch_is_a_conflict(
    db, service, route_id
):
    with pytest.raises(NotFound):
        await service.restart(route_id, RestartableStep.TTS_BATCH, "ops", None)
    await _confirm(db, service, route_id)
    with pytest.raises(Conflict):  # no stories yet: nothing to restart
        await service.restart(route_id, RestartableStep.TTS_BATCH, "ops", None)
    await _stories(db, service, route_id, 1)
    await _tts(db, service, tts_ok(route_id, f"{route_id}-0"))
    with pytest.raises(Conflict):
        await service.restart(route_id, RestartableStep.TTS_BATCH, "ops", None)


async def test_route_to_first_audio_is_observed_once_per_route(db, service, route_id):
    def count() -> float:
        return REGISTRY.get_sample_value("route_to_first_audio_seconds_count") or 0.0

    before = count()
    await _confirm(db, service, route_id)
    await _stories(db, service, route_id, 2)
    await _tts(db, service, tts_ok(route_id, f"{route_id}-0"))
    await _tts(db, service, tts_ok(route_id, f"{route_id}-1"))
    assert count() == before + 1
    assert (await service.get(route_id)).first_audio_at is not None


async def test_a_story_list_without_stories_fails_story_generation(db, service, route_id):
    await _confirm(db, service, route_id)
    await deliver(
        db,
        service.on_stories_generated,
        topics.STORY_GENERATED,
        {"route_id": route_id, "lang": "ru", "stories": []},
    )
    view = await service.get(route_id)
    assert view.status == "failed" and _step(view, "story_generate").status == "failed"


async def test_a_batch_of_many_routes_with_repeats_and_a_failure_ends_as_one_event_at_a_time_would(
    db, service, route_id
):
    """The consumers hand over fetched batches: set-based statements for the whole batch must give each
    route what its events one by one give (a repeat is a no-op, a failure fails only its route)."""
    routes = [f"{route_id}-{n}" for n in range(4)]
    confirmed = [Event(topics.ROUTE_CONFIRMED, {"route_id": r, "mode": "walk"}) for r in routes]
    await deliver_batch(db, service.on_route_confirmed, [*confirmed, confirmed[1]])
    generated = [
        Event(topics.STORY_GENERATED, {"route_id": r, "lang": "ru", "stories": stories(r, 2 + n)})
        for n, r in enumerate(routes)
    ]
    await deliver_batch(db, service.on_stories_generated, [generated[2], *generated, generated[0]])

    # Every route's first story is requested before any route's second.
    requested = [p for _, p in await emitted(db, topics.TTS_REQUESTED)]
    assert len(requested) == 2 + 3 + 4 + 5
    assert [p["position"] for p in requested] == sorted(p["position"] for p in requested)
    assert [p["story_id"] for p in requested[:4]] == [f"{r}-0" for r in routes]

    # The last route's second story fails; everything else completes, its first result twice.
    results = [
        Event(
            topics.TTS_COMPLETED,
            tts_failed(r, f"{r}-{s}") if (r, s) == (routes[3], 1) else tts_ok(r, f"{r}-{s}"),
        )
        for n, r in enumerate(routes)
        for s in range(2 + n)
    ]
    await deliver_batch(db, service.on_tts_completed, [results[0], *results])

    views = [await service.get(r) for r in routes]
    assert [v.status for v in views] == ["completed", "completed", "completed", "failed"]
    assert all(v.first_audio_at is not None for v in views)
    assert [j.status for j in views[3].jobs] == ["completed", "failed", "completed", "completed", "completed"]
    assert _step(views[3], "tts_batch").error == f"story {routes[3]}-1: synth broke"
    assert [(s.status, s.attempts) for s in views[0].steps] == [("completed", 1)] * 3
    prefetch = await emitted(db, topics.DELIVERY_PREFETCH)
    assert [k for k, _ in prefetch] == routes[:3]
    assert prefetch[2][1]["next_audio"] == [f"a-{routes[2]}-{s}-1" for s in range(4)]
    assert len(await emitted(db, topics.STORY_GENERATE)) == 4
