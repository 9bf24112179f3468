"""`keel up` for cityguide: all four services in one process on the memory bus (no KAFKA_BROKERS) run
the same flow as on Kafka — delivery prefetch included, since the embedded bus feeds its consumer."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from keel.cityguide import topics
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.spec import SPEC as TTS
from keel.core.events import Event, encode
from tests.integration.cityguide.conftest import serving
from tests.support.eventually import eventually


async def test_keel_up_runs_the_flow_to_prefetchable_audio_on_the_memory_bus_and_exports_its_metrics(
    fresh_pg_dsn, make_settings, monkeypatch
):
    monkeypatch.setenv("TTS_MODE", "instant")
    route_id = f"up-{uuid.uuid4().hex[:8]}"
    settings = make_settings(postgres_dsn=fresh_pg_dsn)
    async with serving([ORCHESTRATOR, DELIVERY, STORY, TTS], settings, embedded=True) as (app, client):
        assert app.state.infra.bus.name == "memory"
        producer = app.state.infra.bus.producer()
        await producer.start()
        payload = {"route_id": route_id, "mode": "walk"}
        await producer.send(
            encode(Event(topics.ROUTE_CONFIRMED, payload, key=route_id), topics.ROUTE_CONFIRMED, "bare")
        )
        await producer.stop()
        done = await eventually(
            lambda: client.get(f"/workflows/{route_id}"),
            until=lambda r: r.status_code == 200 and r.json()["status"] == "completed",
            timeout_s=30,
            what="workflow completed",
        )
        jobs = done.json()["jobs"]
        links = await eventually(
            lambda: client.get("/delivery/prefetch", params={"route_id": route_id, "next": 50}),
            until=lambda r: len(r.json()["items"]) == len(jobs),
            timeout_s=10,
            what="every audio prefetchable",
        )
        first = await client.get(links.json()["items"][0]["url"])
        metrics = (await client.get("/metrics")).text
    assert 3 <= len(jobs) <= 5
    assert [i["audio_id"] for i in links.json()["items"]] == [j["audio_id"] for j in jobs]
    assert first.status_code == 200 and first.content[:4] == b"RIFF"
    assert "route_to_first_audio_seconds_count" in metrics
    jobs_done = {
        (s.labels["task"], s.labels["outcome"])
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "job_duration_seconds_count"
    }
    assert ("tts.synthesize", "ok") in jobs_done
    assert any(task == "orchestrator.tts.completed" for task, _ in jobs_done)
