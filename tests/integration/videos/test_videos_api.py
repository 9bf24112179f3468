"""The video API on the real PostgreSQL and Redis (memory bus): create, read through the cache,
conflicts, validation, retry's refusals, and the clip the worker makes in the default mode."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urljoin

import imageio_ffmpeg
from prometheus_client import REGISTRY

from keel.core.runtime import build_app
from keel.videos.spec import build_spec
from tests.integration.videos.conftest import serving, status_of
from tests.integration.videos.hls_check import decode, parse_media_playlist
from tests.support.eventually import eventually

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def body(**overrides: str) -> dict[str, str]:
    return {"title": "Big Buck Bunny", "url": f"https://cdn.example.com/{uuid.uuid4().hex}.mp4", **overrides}


def cache_hits(name: str) -> float:
    return REGISTRY.get_sample_value("cache_requests_total", {"cache": name, "result": "hit"}) or 0.0


async def test_create_answers_201_with_id_title_and_playlist_url(settings, video_settings):
    async with serving(settings, video_settings(), run_workers=False) as (_, client):
        response = await client.post("/api/videos", json=body(title="  Trimmed  "))
    assert response.status_code == 201
    created = response.json()
    assert isinstance(created["id"], int)
    assert created == {"id": created["id"], "title": "Trimmed", "playlist_url": f"/hls/{created['id']}.m3u8"}


async def test_video_goes_from_pending_to_ready_through_the_worker(settings, video_settings):
    videos = video_settings()
    # Without workers nothing processes it: the event waits in the outbox and the video is pending.
    async with serving(settings, videos, run_workers=False) as (_, client):
        created = (await client.post("/api/videos", json=body())).json()
        assert await status_of(client, created["id"]) == "pending"
    # A process with the relay and the consumer picks the event up from the outbox.
    async with serving(settings, videos) as (_, client):
        await eventually(lambda: status_of(client, created["id"]), until=lambda s: s == "ready", timeout_s=15)
        video = (await client.get(f"/api/videos/{created['id']}")).json()
    assert video["error"] is None
    assert video["original_url"].endswith(".mp4")
    assert video["updated_at"] >= video["created_at"]


async def test_second_get_is_a_cache_hit_and_a_worker_update_invalidates_it(settings, video_settings):
    videos = video_settings()
    async with serving(settings, videos, run_workers=False) as (_, client):
        video_id = (await client.post("/api/videos", json=body())).json()["id"]
        first = await client.get(f"/api/videos/{video_id}")
        hits_before = cache_hits(videos.cache_name)
        second = await client.get(f"/api/videos/{video_id}")
        assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
        assert second.json() == first.json()
        assert cache_hits(videos.cache_name) == hits_before + 1
    async with serving(settings, videos) as (_, client):
        # The worker changes the row: the cached `pending` must not be served after that.
        ready = await eventually(
            lambda: client.get(f"/api/videos/{video_id}"),
            until=lambda r: r.json()["status"] == "ready",
            timeout_s=15,
        )
        assert ready.headers["X-Cache"] == "miss"
        # A read that loads `ready` between the worker's commit and its invalidation is stored under
        # the old generation and refused once; the read after that caches `ready` for good.
        again = await eventually(
            lambda: client.get(f"/api/videos/{video_id}"),
            until=lambda r: r.headers["X-Cache"] == "hit",
            timeout_s=5,
        )
        assert again.json()["status"] == "ready"


async def test_duplicate_url_is_409_even_when_posted_concurrently(settings, video_settings):
    payload = body()
    async with serving(settings, video_settings(), run_workers=False) as (_, client):
        responses = await asyncio.gather(*(client.post("/api/videos", json=payload) for _ in range(8)))
        later = await client.post("/api/videos", json={**payload, "title": "another title"})
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 7
    assert later.status_code == 409
    assert later.json()["error"]["code"] == "conflict"


async def test_invalid_bodies_are_422_with_field_details(settings, video_settings):
    cases = {
        "blank title": ({"title": "   ", "url": "https://example.com/a.mp4"}, "title"),
        "long title": ({"title": "x" * 256, "url": "https://example.com/b.mp4"}, "title"),
        "relative url": ({"title": "t", "url": "/videos/a.mp4"}, "url"),
        "ftp url": ({"title": "t", "url": "ftp://example.com/a.mp4"}, "url"),
        "long url": ({"title": "t", "url": "https://example.com/" + "a" * 2100}, "url"),
        "missing url": ({"title": "t"}, "url"),
        "extra field": ({"title": "t", "url": "https://example.com/c.mp4", "owner": "x"}, "owner"),
    }
    async with serving(settings, video_settings(), run_workers=False) as (_, client):
        for name, (payload, field) in cases.items():
            response = await client.post("/api/videos", json=payload)
            assert response.status_code == 422, name
            error = response.json()["error"]
            assert error["code"] == "validation_error", name
            assert any(field in detail["field"] for detail in error["details"]), (name, error)


async def test_unknown_video_is_404_in_the_error_envelope(settings, video_settings):
    async with serving(settings, video_settings(), run_workers=False) as (_, client):
        response = await client.get("/api/videos/987654")
        playlist = await client.get("/hls/987654.m3u8")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert playlist.status_code == 404


async def test_default_mode_makes_a_real_clip_that_ffmpeg_decodes_segment_by_segment(
    settings, video_settings, tmp_path
):
    async with serving(settings, video_settings()) as (_, client):
        created = (await client.post("/api/videos", json=body(title="Кремль: 100% {demo}"))).json()
        await eventually(lambda: status_of(client, created["id"]), until=lambda s: s == "ready", timeout_s=30)
        playlist_url = urljoin("http://videos/", created["playlist_url"])
        response = await client.get(playlist_url)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        playlist = parse_media_playlist(response.text)
        segments = []
        for _, uri in playlist.segments:
            segment = await client.get(urljoin(playlist_url, uri))
            assert segment.status_code == 200, uri
            assert segment.headers["content-type"] == "video/mp2t"
            segments.append(segment.content)
        bad = await client.get(f"/hls/{created['id']}/../../etc.ts")
    assert bad.status_code == 404
    assert playlist.ended and playlist.media_sequence == 0 and len(playlist.segments) >= 2
    assert 3.5 <= sum(d for d, _ in playlist.segments) <= 4.5
    for n, content in enumerate(segments):
        media = tmp_path / f"{n}.ts"
        media.write_bytes(content)
        code, errors, streams = await decode(FFMPEG, media)
        assert (code, errors) == (0, ""), f"segment {n}: {errors}"
        assert "Video: h264" in streams and "Audio: aac" in streams, streams


async def test_retry_is_404_for_an_unknown_video_and_409_for_one_that_has_not_failed(
    settings, video_settings
):
    async with serving(settings, video_settings(), run_workers=False) as (_, client):
        video_id = (await client.post("/api/videos", json=body())).json()["id"]
        pending = await client.post(f"/api/videos/{video_id}/retry")
        unknown = await client.post("/api/videos/987654/retry")
        video = (await client.get(f"/api/videos/{video_id}")).json()
    assert pending.status_code == 409
    assert pending.json()["error"]["code"] == "conflict"
    assert "pending" in pending.json()["error"]["message"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert (video["status"], video["retries"]) == ("pending", 0)


async def test_worker_in_another_process_invalidates_the_api_cache_through_redis(settings, video_settings):
    videos = video_settings()
    worker = build_app([build_spec(videos)], settings, serve_routes=False)  # relay + consumer only
    async with serving(settings, videos, run_workers=False) as (_, api):
        video_id = (await api.post("/api/videos", json=body())).json()["id"]
        await api.get(f"/api/videos/{video_id}")
        cached = await api.get(f"/api/videos/{video_id}")
        assert (cached.headers["X-Cache"], cached.json()["status"]) == ("hit", "pending")
        async with worker.router.lifespan_context(worker):
            ready = await eventually(
                lambda: api.get(f"/api/videos/{video_id}"),
                until=lambda r: r.json()["status"] == "ready",
                timeout_s=15,
            )
    assert ready.headers["X-Cache"] == "miss"  # the API process never served its stale `pending` after
