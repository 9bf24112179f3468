"""POST /api/videos → outbox → relay → videos.events → HLS job → ready is one trace over OTLP."""

from __future__ import annotations

import uuid

from tests.integration.videos.conftest import serving, status_of
from tests.support.eventually import eventually
from tests.support.otlp import assert_connected, assert_parent, traced, traceparent


async def test_a_video_is_one_trace_from_the_request_to_its_playlist(
    settings, video_settings, kafka_brokers, otlp, quick_span_export
):
    videos = video_settings()
    settings = traced(settings.model_copy(update={"kafka_brokers": kafka_brokers}), otlp)
    trace_id = uuid.uuid4().hex
    body = {"title": "Traced", "url": f"https://cdn.example.com/{uuid.uuid4().hex}.mp4"}
    async with serving(settings, videos) as (_, client):
        created = await client.post("/api/videos", json=body, headers={"traceparent": traceparent(trace_id)})
        assert created.status_code == 201, created.text
        await eventually(
            lambda: status_of(client, created.json()["id"]), until=lambda s: s == "ready", timeout_s=40
        )
        process = f"process {videos.topic}"
        spans = await eventually(
            lambda: otlp.trace(trace_id),
            until=lambda got: any(s.name == process for s in got),
            timeout_s=30,
            what="the HLS job's span exported",
        )
    assert [s.name for s in spans if s.kind == "SERVER"] == ["POST /api/videos"]
    assert_parent(spans, f"send {videos.topic}", "POST /api/videos")
    assert_parent(spans, process, f"send {videos.topic}")
    assert_connected(spans, "ab" * 8)
