"""The reaper takes back videos whose job died and whose message will not come back (dead-lettered
or committed): requeued while attempts are left, failed with a reason after."""

from __future__ import annotations

import uuid

import asyncpg

from tests.integration.videos.conftest import serving, status_of, video_row
from tests.support.eventually import eventually


async def _strand(dsn: str, video_id: int, attempts: int) -> None:
    """The row as a dead job leaves it, with no event left to redeliver."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE videos SET status = 'processing', attempts = $2,"
            " processing_started_at = now() - interval '1 hour' WHERE id = $1",
            video_id,
            attempts,
        )
        await conn.execute("DELETE FROM outbox_events WHERE key = $1", str(video_id))
    finally:
        await conn.close()


async def test_stuck_videos_are_requeued_with_attempts_left_and_failed_without(
    settings, video_settings, fresh_pg_dsn
):
    videos = video_settings(processing_timeout_s=60, reaper_interval_s=0.05)
    async with serving(settings, videos, run_workers=False) as (_, client):
        retry_id, spent_id = [
            (
                await client.post("/api/videos", json={"title": "t", "url": f"https://e.com/{uuid.uuid4()}"})
            ).json()["id"]
            for _ in range(2)
        ]
    await _strand(fresh_pg_dsn, retry_id, attempts=1)
    await _strand(fresh_pg_dsn, spent_id, attempts=settings.consumer_max_attempts)

    async with serving(settings, videos) as (_, client):
        await eventually(lambda: status_of(client, retry_id), until=lambda s: s == "ready", timeout_s=20)
        await eventually(lambda: status_of(client, spent_id), until=lambda s: s == "failed", timeout_s=20)
        failed = (await client.get(f"/api/videos/{spent_id}")).json()
    assert "did not finish within 60s" in failed["error"]
    assert (await video_row(fresh_pg_dsn, retry_id))["attempts"] == 2  # one more, through a new event


async def test_a_job_that_kept_dying_is_failed_instead_of_restarted_forever(
    settings, video_settings, fresh_pg_dsn
):
    videos = video_settings()
    async with serving(settings, videos, run_workers=False) as (_, client):
        video_id = (
            await client.post("/api/videos", json={"title": "t", "url": f"https://e.com/{uuid.uuid4()}"})
        ).json()["id"]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        # Every attempt so far started and died (its process killed) before recording an outcome.
        await conn.execute(
            "UPDATE videos SET status = 'processing', attempts = $2, processing_started_at = now() WHERE id = $1",
            video_id,
            settings.consumer_max_attempts,
        )
    finally:
        await conn.close()

    async with serving(settings, videos) as (_, client):
        await eventually(lambda: status_of(client, video_id), until=lambda s: s == "failed", timeout_s=20)
        video = (await client.get(f"/api/videos/{video_id}")).json()
        playlist = await client.get(f"/hls/{video_id}.m3u8")
    assert "never finished" in video["error"]
    assert playlist.status_code == 404  # the job itself did not run again
