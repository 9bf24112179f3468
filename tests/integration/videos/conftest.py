"""The video service running for real (app, lifespan, workers) on a fresh database and the real Redis,
with its own topics, consumer group and cache namespace so tests never see each other's messages."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from keel.core.settings import Settings
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec
from tests.support.serving import serving_app


@pytest.fixture
def video_settings() -> Callable[..., VideoSettings]:
    suffix = uuid.uuid4().hex[:8]

    def build(**overrides: Any) -> VideoSettings:
        values: dict[str, Any] = {
            "topic": f"videos.events-{suffix}",
            "dlq_topic": f"videos.dlq-{suffix}",
            "group_id": f"videos-hls-{suffix}",
            "cache_name": f"videos-{suffix}",
        }
        values.update(overrides)
        return VideoSettings.model_validate(values)

    return build


@pytest.fixture
def settings(fresh_pg_dsn: str, redis_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        postgres_dsn=fresh_pg_dsn,
        redis_url=redis_url,
        consumer_backoff_base_s=0.01,
        consumer_backoff_max_s=0.05,
        consumer_max_attempts=3,
    )


# For clients of their own (a handful of creates per module).
OWNER = {"X-User-Id": "video-owner"}


def serving(
    settings: Settings, videos: VideoSettings, *, run_workers: bool = True
) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
    """The video service running on these settings, and a client talking to it in process as the
    videos' owner: one per test (the topics' suffix), since the per-user create limit counts in the
    session's Redis."""
    owner = {"X-User-Id": f"owner-{videos.group_id}"}
    return serving_app([build_spec(videos)], settings, run_workers=run_workers, headers=owner)


async def video_row(dsn: str, video_id: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM videos WHERE id = $1", video_id)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def status_of(client: httpx.AsyncClient, video_id: int) -> str:
    response = await client.get(f"/api/videos/{video_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status
