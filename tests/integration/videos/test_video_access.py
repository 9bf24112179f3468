"""Who may read and retry a video (docs/security.md): its owner, and a caller with the `operator` role
(header mode: roles believed from a peer in TRUSTED_PROXIES); a row from before owners existed is the
operators' alone. And how often one user may create (VIDEO_CREATE_LIMIT)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from keel.core.settings import Settings
from tests.integration.videos.conftest import serving
from tests.integration.videos.test_videos_api import body

STRANGER = {"X-User-Id": "stranger"}
OPERATOR = {"X-User-Id": "olga", "X-User-Roles": "operator"}


async def test_an_operator_reads_and_retries_any_video_and_alone_those_from_before_owners(
    make_settings: Callable[..., Settings], fresh_pg_dsn: str, redis_url: str, video_settings
) -> None:
    # The in-process client's peer is 127.0.0.1: trusted, so its X-User-Roles is believed.
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url, trusted_proxies="127.0.0.1/32")
    async with serving(settings, video_settings(), run_workers=False) as (_, client):
        video_id, legacy_id = [(await client.post("/api/videos", json=body())).json()["id"] for _ in range(2)]
        conn = await asyncpg.connect(fresh_pg_dsn)
        try:  # as rows registered before owners existed are (migration 0060)
            await conn.execute("UPDATE videos SET owner = NULL WHERE id = $1", legacy_id)
        finally:
            await conn.close()

        path = f"/api/videos/{video_id}"
        assert (await client.get(path, headers=STRANGER)).status_code == 403
        assert (await client.post(f"{path}/retry", headers=STRANGER)).status_code == 403
        assert (await client.get(path, headers=OPERATOR)).status_code == 200
        retried = await client.post(f"{path}/retry", headers=OPERATOR)
        assert retried.status_code != 403, "past the owner check (a pending video is not retried)"

        legacy = f"/api/videos/{legacy_id}"
        assert (await client.get(legacy)).status_code == 403, "not even its creator: no owner is recorded"
        assert (await client.get(legacy, headers=STRANGER)).status_code == 403
        assert (await client.get(legacy, headers=OPERATOR)).status_code == 200


async def test_creates_are_limited_per_user_with_retry_after(
    make_settings: Callable[..., Settings], fresh_pg_dsn: str, redis_url: str, video_settings
) -> None:
    # The hourly quota set high, so the per-minute rate limit is what a busy user meets first.
    videos = video_settings(create_limit="3/minute", videos_per_user_per_hour=100)
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)
    async with serving(settings, videos, run_workers=False) as (_, client):
        statuses = [(await client.post("/api/videos", json=body())).status_code for _ in range(3)]
        refused = await client.post("/api/videos", json=body())
        other = await client.post("/api/videos", json=body(), headers={"X-User-Id": "someone-else"})
    assert statuses == [201] * 3
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert (
        refused.json()["error"]["code"] == "rate_limited" and "3/minute" in refused.json()["error"]["message"]
    )
    assert other.status_code == 201, "per user: another caller still creates"
