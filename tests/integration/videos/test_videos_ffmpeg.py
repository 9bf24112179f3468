"""HLS_MODE=ffmpeg end to end: a small video made by ffmpeg itself is served on 127.0.0.1, fetched
through the SSRF guard (allow-listed), segmented by the real ffmpeg into object storage, and read
back by ffmpeg through our own HTTP. Sources that cannot be fetched fail the video with a reason
and dead-letter the event."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import imageio_ffmpeg
import orjson
import pytest

from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec
from tests.integration.videos.conftest import OWNER, status_of, video_row
from tests.integration.videos.hls_check import parse_media_playlist
from tests.integration.videos.local_http import Route, local_server
from tests.support.eventually import eventually
from tests.support.serving import serving_http
from tests.support.topic_log import open_topic_log

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def test_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Four seconds of ffmpeg's test pattern, 160x120 at 10 fps, as MP4."""
    out = tmp_path_factory.mktemp("src") / "test.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=4:size=160x120:rate=10",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    return out.read_bytes()


@asynccontextmanager
async def served(settings: Settings, videos: VideoSettings) -> AsyncIterator[tuple[str, object]]:
    """The video service on a real port (ffmpeg must reach it over HTTP); its base URL and app."""
    app = build_app([build_spec(videos)], settings)
    async with serving_http(app, settings) as base:
        yield base, app


def ffmpeg_mode(video_settings, **overrides) -> VideoSettings:
    return video_settings(hls_mode="ffmpeg", fetch_timeout_s=20, ffmpeg_timeout_s=60, **overrides)


def allowing(video_settings, source) -> VideoSettings:
    """ffmpeg mode with the local source server's host and port (only that port) on the allow-list."""
    return ffmpeg_mode(video_settings, fetch_allow_hosts={f"127.0.0.1:{source.port}"})


async def test_source_video_becomes_hls_that_ffmpeg_reads_back_through_our_http(
    settings, video_settings, test_video, fresh_pg_dsn
):
    async with (
        local_server({"/test.mp4": Route(body=test_video, headers={"Content-Type": "video/mp4"})}) as source,
        served(settings, allowing(video_settings, source)) as (base, _),
        httpx.AsyncClient(base_url=base, headers=OWNER) as client,
    ):
        created = (
            await client.post("/api/videos", json={"title": "test", "url": source.url("/test.mp4")})
        ).json()
        await eventually(lambda: status_of(client, created["id"]), until=lambda s: s == "ready", timeout_s=60)
        playlist = parse_media_playlist((await client.get(created["playlist_url"])).text)
        probe = await asyncio.create_subprocess_exec(
            FFMPEG, "-v", "error", "-i", f"{base}/hls/{created['id']}.m3u8", "-f", "null", "-",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(probe.communicate(), 60)
    assert probe.returncode == 0, stderr.decode()
    assert playlist.ended and len(playlist.segments) >= 2  # 4 s cut at 2 s
    assert 3.5 <= sum(d for d, _ in playlist.segments) <= 4.5
    assert all(uri.startswith(f"{created['id']}/") for _, uri in playlist.segments)
    assert (await video_row(fresh_pg_dsn, created["id"]))["attempts"] == 1


async def _dead_letters(app, topic: str, count: int) -> list:
    log = await open_topic_log(app.state.infra.bus, topic)
    try:
        return await log.read(count, within_s=15)
    finally:
        await log.close()


async def test_loopback_source_without_allow_list_is_422_at_registration(
    settings, video_settings, test_video
):
    videos = ffmpeg_mode(video_settings)
    async with (
        local_server({"/test.mp4": Route(body=test_video)}) as source,
        served(settings, videos) as (base, _),
        httpx.AsyncClient(base_url=base, headers=OWNER) as client,
    ):
        refused = await client.post("/api/videos", json={"title": "t", "url": source.url("/test.mp4")})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["type"] == "source_refused"
    assert source.connections == 0


async def test_a_redirect_to_the_metadata_address_fails_at_once_with_a_safe_error_and_is_dead_lettered(
    settings, video_settings, fresh_pg_dsn
):
    routes = {"/v.mp4": Route(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})}
    async with local_server(routes) as source:
        videos = allowing(video_settings, source)
        async with (
            served(settings, videos) as (base, app),
            httpx.AsyncClient(base_url=base, headers=OWNER) as client,
        ):
            video_id = (
                await client.post("/api/videos", json={"title": "t", "url": source.url("/v.mp4")})
            ).json()["id"]
            await eventually(lambda: status_of(client, video_id), until=lambda s: s == "failed", timeout_s=30)
            video = (await client.get(f"/api/videos/{video_id}")).json()
            (dead,) = await _dead_letters(app, videos.dlq_topic, 1)
    assert video["error"].startswith("source_refused: ")
    assert "169.254" not in video["error"] and "127.0.0.1" not in video["error"]  # details: the log only
    assert source.paths == ["/v.mp4"]  # the hop to the metadata address was never attempted
    assert orjson.loads(dead.value)["payload"]["video_id"] == video_id
    assert dead.header("dlq-error-type") == b"PoisonMessage"
    assert (await video_row(fresh_pg_dsn, video_id))["attempts"] == 1  # refused: no retries


async def test_source_that_keeps_failing_is_retried_then_failed_with_its_reason_and_dead_lettered(
    settings, video_settings, fresh_pg_dsn
):
    async with local_server({"/broken.mp4": Route(500, b"boom")}) as source:
        videos = allowing(video_settings, source)
        async with (
            served(settings, videos) as (base, app),
            httpx.AsyncClient(base_url=base, headers=OWNER) as client,
        ):
            video_id = (
                await client.post("/api/videos", json={"title": "t", "url": source.url("/broken.mp4")})
            ).json()["id"]
            await eventually(lambda: status_of(client, video_id), until=lambda s: s == "failed", timeout_s=30)
            video = (await client.get(f"/api/videos/{video_id}")).json()
            (dead,) = await _dead_letters(app, videos.dlq_topic, 1)
    assert video["error"] == "source_http_error: the source answered HTTP 500"
    assert source.paths == ["/broken.mp4"] * settings.consumer_max_attempts  # one fetch per attempt
    assert (await video_row(fresh_pg_dsn, video_id))["attempts"] == settings.consumer_max_attempts
    assert int(dead.header("dlq-attempts")) == settings.consumer_max_attempts


async def test_a_404_source_fails_after_one_attempt_and_a_retry_once_it_is_there_ends_ready(
    settings, video_settings, test_video, fresh_pg_dsn
):
    async with local_server({}) as source:  # every path answers 404 until the file is put in place
        videos = allowing(video_settings, source)
        async with (
            served(settings, videos) as (base, app),
            httpx.AsyncClient(base_url=base, headers=OWNER) as client,
        ):
            video_id = (
                await client.post("/api/videos", json={"title": "t", "url": source.url("/late.mp4")})
            ).json()["id"]
            await eventually(lambda: status_of(client, video_id), until=lambda s: s == "failed", timeout_s=30)
            failed = (await client.get(f"/api/videos/{video_id}")).json()
            (dead,) = await _dead_letters(app, videos.dlq_topic, 1)

            source.routes["/late.mp4"] = Route(body=test_video, headers={"Content-Type": "video/mp4"})
            retried = await client.post(f"/api/videos/{video_id}/retry")
            again = await client.post(f"/api/videos/{video_id}/retry")
            await eventually(lambda: status_of(client, video_id), until=lambda s: s == "ready", timeout_s=60)
            ready = (await client.get(f"/api/videos/{video_id}")).json()
            segment = await client.get(f"/hls/{video_id}/0.ts")
    assert failed["error"] == "source_http_error: the source answered HTTP 404"
    assert (failed["attempts"], dead.header("dlq-error-type")) == (1, b"PoisonMessage")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["status"], retried.json()["error"], retried.json()["retries"]) == (
        "pending",
        None,
        1,
    )
    assert again.status_code == 409  # already pending: one retry makes one new round
    assert source.paths == ["/late.mp4", "/late.mp4"]  # once before the retry, once after
    assert (ready["error"], ready["attempts"], ready["retries"]) == (None, 1, 1)
    assert segment.status_code == 200 and segment.content[0] == 0x47
    row = await video_row(fresh_pg_dsn, video_id)
    assert (row["status"], row["attempts"], row["retries"]) == ("ready", 1, 1)


async def test_a_source_that_is_not_a_media_file_fails_at_once_without_retries(
    settings, video_settings, fresh_pg_dsn
):
    page = b"<!doctype html><title>Not a video</title>" * 50
    async with local_server({"/page.mp4": Route(body=page, headers={"Content-Type": "text/html"})}) as source:
        videos = allowing(video_settings, source)
        async with (
            served(settings, videos) as (base, app),
            httpx.AsyncClient(base_url=base, headers=OWNER) as client,
        ):
            video_id = (
                await client.post("/api/videos", json={"title": "t", "url": source.url("/page.mp4")})
            ).json()["id"]
            await eventually(lambda: status_of(client, video_id), until=lambda s: s == "failed", timeout_s=30)
            video = (await client.get(f"/api/videos/{video_id}")).json()
            (dead,) = await _dead_letters(app, videos.dlq_topic, 1)
    assert video["error"] == "transcode_failed: the source could not be converted to HLS"
    assert source.paths == ["/page.mp4"]  # downloaded once, not once per attempt
    assert (await video_row(fresh_pg_dsn, video_id))["attempts"] == 1
    assert dead.header("dlq-error-type") == b"PoisonMessage"
