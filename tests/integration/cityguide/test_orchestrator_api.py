"""The orchestrator's HTTP API and its consumers, running in the real app on the memory bus and real
PostgreSQL: what an operator sees and may do, and what outside producers' bare messages do."""

from __future__ import annotations

import uuid

import orjson
import pytest

from keel.cityguide import topics
from keel.cityguide.orchestrator.spec import SPEC
from keel.core.bus import OutgoingMessage
from tests.integration.cityguide.conftest import serving
from tests.integration.cityguide.support import deliver, stories, tts_failed, tts_ok
from tests.support.eventually import eventually
from tests.support.topic_log import open_topic_log

# Roles are believed from a trusted proxy only: the in-process client's address is named one below.
OPS = {"X-User-Id": "ops-anna", "X-User-Roles": "operator"}
PROXY = "127.0.0.1/32"


@pytest.fixture
def route_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


async def _failed_workflow(app, route_id):
    service, db = app.state.orchestrator, app.state.infra.db
    await deliver(
        db, service.on_route_confirmed, topics.ROUTE_CONFIRMED, {"route_id": route_id, "mode": "walk"}
    )
    payload = {"route_id": route_id, "lang": "ru", "stories": stories(route_id, 2)}
    await deliver(db, service.on_stories_generated, topics.STORY_GENERATED, payload)
    await deliver(db, service.on_tts_completed, topics.TTS_COMPLETED, tts_ok(route_id, f"{route_id}-0"))
    await deliver(db, service.on_tts_completed, topics.TTS_COMPLETED, tts_failed(route_id, f"{route_id}-1"))


async def test_unknown_workflow_is_404_in_the_error_envelope(fresh_pg_dsn, make_settings):
    async with serving([SPEC], make_settings(postgres_dsn=fresh_pg_dsn)) as (_, client):
        response = await client.get("/workflows/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_restart_answers_422_for_an_unknown_step_404_for_an_unknown_route_401_without_user(
    fresh_pg_dsn, make_settings, route_id
):
    async with serving([SPEC], make_settings(postgres_dsn=fresh_pg_dsn, trusted_proxies=PROXY)) as (
        app,
        client,
    ):
        await _failed_workflow(app, route_id)
        bad_step = await client.post(f"/workflows/{route_id}/restart?step=delivery", headers=OPS)
        no_step = await client.post(f"/workflows/{route_id}/restart", headers=OPS)
        unknown = await client.post("/workflows/nope/restart?step=tts_batch", headers=OPS)
        anonymous = await client.post(
            f"/workflows/{route_id}/restart?step=tts_batch", headers={"X-User-Id": ""}
        )
    assert (bad_step.status_code, no_step.status_code) == (422, 422)
    assert bad_step.json()["error"]["code"] == "validation_error"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert anonymous.status_code == 401


async def test_restart_of_a_failed_batch_is_202_with_attempts_2_and_an_audit_entry(
    fresh_pg_dsn, make_settings, route_id
):
    async with serving([SPEC], make_settings(postgres_dsn=fresh_pg_dsn, trusted_proxies=PROXY)) as (
        app,
        client,
    ):
        await _failed_workflow(app, route_id)
        before = (await client.get(f"/workflows/{route_id}")).json()
        response = await client.post(
            f"/workflows/{route_id}/restart?step=tts_batch", headers=OPS, json={"reason": "voice data fixed"}
        )
        after = (await client.get(f"/workflows/{route_id}")).json()
    assert before["status"] == "failed"
    assert response.status_code == 202
    assert response.json() == after
    batch = next(s for s in after["steps"] if s["name"] == "tts_batch")
    assert (batch["status"], batch["attempts"], batch["error"]) == ("pending", 2, None)
    assert [(j["status"], j["attempt"]) for j in after["jobs"]] == [("completed", 1), ("pending", 2)]
    [audit] = after["restarts"]
    assert (audit["requested_by"], audit["reason"], audit["attempt"]) == ("ops-anna", "voice data fixed", 2)


async def test_outside_producers_bare_messages_without_headers_are_deduplicated_by_natural_key(
    fresh_pg_dsn, make_settings, route_id
):
    """No event-id header: the same route.confirmed twice is one workflow and one story.generate."""
    async with serving([SPEC], make_settings(postgres_dsn=fresh_pg_dsn, trusted_proxies=PROXY)) as (
        app,
        client,
    ):
        bus = app.state.infra.bus
        commands = await open_topic_log(bus, topics.STORY_GENERATE)
        producer = bus.producer()
        await producer.start()
        value = orjson.dumps({"route_id": route_id, "mode": "bike", "city": "Казань"})
        # Same partition key, so the sentinel is handled after both copies.
        sentinel = orjson.dumps({"route_id": f"{route_id}-sentinel", "mode": "walk"})
        for raw in (value, value, sentinel):
            await producer.send(OutgoingMessage(topics.ROUTE_CONFIRMED, raw, key=route_id.encode()))
        await producer.stop()
        await eventually(
            lambda: client.get(f"/workflows/{route_id}-sentinel"),
            until=lambda r: r.status_code == 200,
            what="sentinel workflow",
        )
        workflow = await client.get(f"/workflows/{route_id}")
        sent = await commands.read(2, within_s=10)
        assert await commands.size() == 2
    command = next(m for m in sent if orjson.loads(m.value)["route_id"] == route_id)
    assert workflow.json()["mode"] == "bike"
    assert orjson.loads(command.value) == {
        "route_id": route_id,
        "lang": "ru",
        "mode": "bike",
        "route": {"route_id": route_id, "mode": "bike", "city": "Казань"},
    }
    assert command.header("event-type") == b"story.generate"


async def test_a_malformed_route_confirmed_goes_to_the_dead_letter_topic_and_the_next_one_still_runs(
    fresh_pg_dsn, make_settings, route_id
):
    async with serving([SPEC], make_settings(postgres_dsn=fresh_pg_dsn, trusted_proxies=PROXY)) as (
        app,
        client,
    ):
        bus = app.state.infra.bus
        dlq = await open_topic_log(bus, topics.DLQ)
        producer = bus.producer()
        await producer.start()
        for body in (b'{"mode": "walk"}', b"not json", orjson.dumps({"route_id": route_id, "mode": "walk"})):
            await producer.send(OutgoingMessage(topics.ROUTE_CONFIRMED, body, key=route_id.encode()))
        await producer.stop()
        dead = await dlq.read(2, within_s=10)
        ok = await eventually(
            lambda: client.get(f"/workflows/{route_id}"),
            until=lambda r: r.status_code == 200,
            what="workflow",
        )
    assert {m.value for m in dead} == {b'{"mode": "walk"}', b"not json"}
    assert ok.json()["status"] == "running"
