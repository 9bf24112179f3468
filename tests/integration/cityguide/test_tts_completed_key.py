"""`tts.completed` as seed 000 keys it: the record key is the audio id for both consumers (orchestrator
and delivery-prefetch); a payload `audio_id` is optional and, when present, must agree with the key —
a record whose two ids disagree goes to `cityguide.dlq`, once per consumer group, with the reason."""

from __future__ import annotations

import uuid

import orjson
import pytest

from keel.cityguide import topics
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.core.bus.message import OutgoingMessage
from tests.integration.cityguide.conftest import serving
from tests.integration.cityguide.support import stories
from tests.support.eventually import eventually


@pytest.fixture
def route_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


def _dead(app, key: bytes) -> list:
    return [
        m
        for part in app.state.infra.bus.topic(topics.DLQ).logs
        for m in part.records
        if m.key == key and m.header("dlq-original-topic") == topics.TTS_COMPLETED.encode()
    ]


async def _publish(app, *records: tuple[str, dict]) -> None:
    """tts.completed records (key, payload), as an outside producer sends them (no envelope headers)."""
    producer = app.state.infra.bus.producer()
    await producer.start()
    try:
        for key, body in records:
            await producer.send(OutgoingMessage(topics.TTS_COMPLETED, orjson.dumps(body), key=key.encode()))
    finally:
        await producer.stop()


async def test_a_payload_audio_id_that_disagrees_with_the_key_is_dead_lettered_by_both_consumers(
    make_settings, fresh_pg_dsn, route_id
):
    key = f"{route_id}-a0"
    body = {"route_id": route_id, "story_id": "s0", "audio_id": "someone-else", "status": "completed"}
    async with serving([ORCHESTRATOR, DELIVERY], make_settings(postgres_dsn=fresh_pg_dsn), embedded=True) as (
        app,
        client,
    ):
        await _publish(app, (key, body))
        dead = await eventually(
            lambda: _dead(app, key.encode()),
            until=lambda d: len(d) == 2,
            timeout_s=30,
            what="two dead letters",
        )
        prefetch = await client.get("/delivery/prefetch", params={"route_id": route_id})
    groups = sorted(m.header("dlq-consumer-group").decode() for m in dead)
    assert groups == sorted(["delivery-prefetch", f"orchestrator.{topics.TTS_COMPLETED}"]), groups
    for m in dead:
        reason = m.header("dlq-error").decode()
        assert "disagree" in reason and key in reason and "someone-else" in reason, reason
        assert m.header("dlq-error-type") == b"PoisonMessage"
    assert prefetch.json()["items"] == []


async def test_the_record_key_alone_names_the_audio_for_both_consumers(make_settings, fresh_pg_dsn, route_id):
    async with serving([ORCHESTRATOR, DELIVERY], make_settings(postgres_dsn=fresh_pg_dsn), embedded=True) as (
        app,
        client,
    ):
        producer = app.state.infra.bus.producer()
        await producer.start()
        try:
            await producer.send(
                OutgoingMessage(
                    topics.ROUTE_CONFIRMED, orjson.dumps({"route_id": route_id}), key=route_id.encode()
                )
            )
            payload = {"route_id": route_id, "lang": "ru", "stories": stories(route_id, 1)}
            await producer.send(
                OutgoingMessage(topics.STORY_GENERATED, orjson.dumps(payload), key=route_id.encode())
            )
        finally:
            await producer.stop()
        story_id = f"{route_id}-0"
        await eventually(
            lambda: client.get(f"/workflows/{route_id}"),
            until=lambda r: r.status_code == 200 and len(r.json()["jobs"]) == 1,
            timeout_s=30,
            what="the job",
        )
        # As the seed's producer sends it: the audio id in the key, a number in the payload agreeing.
        await _publish(
            app,
            ("901", {"route_id": route_id, "story_id": story_id, "audio_id": 901, "status": "completed"}),
        )
        done = await eventually(
            lambda: client.get(f"/workflows/{route_id}"),
            until=lambda r: r.json()["status"] == "completed",
            timeout_s=30,
            what="the workflow completed",
        )
        ready = await eventually(
            lambda: client.get("/delivery/prefetch", params={"route_id": route_id}),
            until=lambda r: len(r.json()["items"]) == 1,
            timeout_s=30,
            what="the audio ready",
        )
        # And without any audio_id in the payload: the key is the id.
        other = f"{route_id}-solo"
        await _publish(app, (other, {"route_id": other, "story_id": "s0", "status": "completed"}))
        solo = await eventually(
            lambda: client.get("/delivery/prefetch", params={"route_id": other}),
            until=lambda r: len(r.json()["items"]) == 1,
            timeout_s=30,
            what="the key-only audio ready",
        )
        dead = _dead(app, b"901") + _dead(app, other.encode())
    assert [j["audio_id"] for j in done.json()["jobs"]] == ["901"]
    assert [i["audio_id"] for i in ready.json()["items"]] == ["901"]
    assert [i["audio_id"] for i in solo.json()["items"]] == [other]
    assert dead == []
