"""The video pipeline on the real broker: create → outbox → videos.events → HLS consumer → ready,
and a worker process killed mid-job leaves no video stuck in processing."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import orjson

from keel.core.settings import Settings
from tests.integration.videos.conftest import serving, status_of, video_row
from tests.support.eventually import eventually
from tests.support.topic_log import KafkaTopicLog

ROOT = Path(__file__).resolve().parents[3]


def body() -> dict[str, str]:
    return {"title": "On the broker", "url": f"https://cdn.example.com/{uuid.uuid4().hex}.mp4"}


def on_broker(settings: Settings, brokers: list[str]) -> Settings:
    return settings.model_copy(update={"kafka_brokers": brokers, "kafka_partitions": 2})


async def test_created_video_is_published_once_and_made_ready_by_the_consumer(
    settings, video_settings, kafka_brokers
):
    videos = video_settings()
    async with serving(on_broker(settings, kafka_brokers), videos) as (_, client):
        created = (await client.post("/api/videos", json=body())).json()
        await eventually(lambda: status_of(client, created["id"]), until=lambda s: s == "ready", timeout_s=40)

    log = await KafkaTopicLog(kafka_brokers, videos.topic).open()
    try:
        records = await log.read(await log.size(), within_s=30)
    finally:
        await log.close()
    assert len(records) == 1
    envelope = orjson.loads(records[0].value)
    assert records[0].key == str(created["id"]).encode()
    assert envelope["event_type"] == "video.uploaded"
    assert envelope["payload"]["video_id"] == created["id"]
    assert uuid.UUID(envelope["event_id"]) and envelope["created_at"]


async def test_worker_killed_after_marking_processing_is_redelivered_and_the_video_becomes_ready(
    settings, video_settings, kafka_brokers, fresh_pg_dsn
):
    settings = on_broker(settings, kafka_brokers)
    videos = video_settings()
    async with serving(settings, videos, run_workers=False) as (_, client):
        video_id = (await client.post("/api/videos", json=body())).json()["id"]

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.videos.crash_child",
        settings.model_dump_json(by_alias=False),
        videos.model_dump_json(by_alias=False),
        cwd=ROOT,
        env={**os.environ, "KEEL_CRASH_POINTS": "videos.after_processing_marked"},
    )
    assert await asyncio.wait_for(child.wait(), 60) == 137  # died at the crash point, like kill -9
    crashed = await video_row(fresh_pg_dsn, video_id)
    assert (crashed["status"], crashed["attempts"]) == ("processing", 1)

    # A healthy worker joins: the uncommitted message comes back and the job restarts from processing.
    async with serving(settings, videos) as (_, client):
        await eventually(lambda: status_of(client, video_id), until=lambda s: s == "ready", timeout_s=60)
    done = await video_row(fresh_pg_dsn, video_id)
    assert (done["status"], done["attempts"], done["processing_started_at"]) == ("ready", 2, None)
