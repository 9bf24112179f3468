"""Video sources: `POST /api/videos` answers 422 in the envelope for a URL the worker would refuse
(judged from the URL alone, no DNS), the allow-list admits a host:port and nothing more, credentials
never come back in a URL, callers read a short code and a safe message in `error` (details stay in
the log), and ffmpeg reads nothing but the downloaded file."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import imageio_ffmpeg
import pytest

from keel.videos import hls, repository
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec
from tests.support.serving import serving_app

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

REFUSED = {
    "private address": "http://10.0.0.1/a.mp4",
    "cloud metadata": "http://169.254.169.254/latest/meta-data/",
    "loopback database port": "http://127.0.0.1:5432/",
    "loopback as one integer": "http://2130706433/a.mp4",
    "IPv6 loopback": "http://[::1]:6379/",
    "IPv4-mapped metadata": "http://[::ffff:169.254.169.254]/",
    "localhost": "http://localhost:6379/",
    "a compose service name": "http://postgres:5432/",
    "an .internal name": "http://metadata.google.internal/computeMetadata/v1/",
    "credentials": "https://user:pass@cdn.example.com/a.mp4",
    "allow-listed host, other port": "http://127.0.0.1:8081/a.mp4",
}

OWNER = "source-owner"  # the caller of every request here, and the owner of the rows inserted


@asynccontextmanager
async def videos(make_settings: Any, pg_dsn: str, **video: Any) -> AsyncIterator[httpx.AsyncClient]:
    spec = build_spec(VideoSettings(_env_file=None, **video))  # type: ignore[call-arg]
    async with serving_app(
        [spec], make_settings(postgres_dsn=pg_dsn), run_workers=False, headers={"X-User-Id": OWNER}
    ) as (_, client):
        yield client


async def test_a_url_the_worker_would_refuse_is_422_at_registration(make_settings, fresh_pg_dsn):
    async with videos(make_settings, fresh_pg_dsn, fetch_allow_hosts="127.0.0.1:8080") as client:
        refused = {
            name: await client.post("/api/videos", json={"title": "t", "url": url})
            for name, url in REFUSED.items()
        }
        allowed = await client.post("/api/videos", json={"title": "t", "url": "http://127.0.0.1:8080/a.mp4"})
        public = await client.post("/api/videos", json={"title": "t", "url": "https://cdn.example.com/a.mp4"})
    for name, response in refused.items():
        assert response.status_code == 422, f"{name}: {response.status_code} {response.text}"
        error = response.json()["error"]
        assert error["code"] == "validation_error" and error["request_id"], name
        assert error["details"][0]["field"] == "body.url" and error["details"][0]["type"] == "source_refused"
        assert "pass" not in response.text, name
    assert allowed.status_code == 201, allowed.text  # the allow-listed host:port
    assert public.status_code == 201, public.text  # a name: the worker resolves and judges it
    print(
        f"\nvideo registration: {len(refused)} refused sources → 422; allow-listed host:port and a public name → 201"
    )


async def _insert(dsn: str, url: str, error: str | None) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        video_id = await conn.fetchval(repository.INSERT, "legacy", url, datetime.now(UTC), OWNER)
        if error is not None:
            await conn.execute(repository.FAIL, video_id, error, datetime.now(UTC))
        return int(video_id)
    finally:
        await conn.close()


async def test_rows_from_before_show_neither_credentials_nor_details(make_settings, fresh_pg_dsn):
    detailed = (
        "FetchFailed: cannot resolve 'cdn.internal.example': [Errno -2] 10.0.0.3:5432 refused; "
        "/tmp/keel-video-7-abc/source"
    )
    video_id = await _insert(fresh_pg_dsn, "http://alice:s3cret@cdn.example.com/v.mp4", detailed)
    async with videos(make_settings, fresh_pg_dsn) as client:
        video = (await client.get(f"/api/videos/{video_id}")).json()
    assert video["original_url"] == "http://cdn.example.com/v.mp4"
    assert video["error"] == "processing_failed: the video could not be processed"
    assert "s3cret" not in str(video) and "10.0.0.3" not in str(video) and "/tmp" not in str(video)


async def test_ffmpeg_reads_no_file_or_url_a_playlist_source_names(tmp_path: Path):
    """A source that is a playlist naming another file on the worker's disk: ffmpeg's HLS demuxer would
    read that file into the video; the demuxer and protocol whitelists refuse the playlist."""
    local = tmp_path / "worker-local.ts"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=64x48:rate=5",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-f", "mpegts", str(local)],
        check=True, timeout=60,
    )  # fmt: skip
    evil = tmp_path / "source.m3u8"
    evil.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{local}\n#EXT-X-ENDLIST\n")
    out = tmp_path / "hls"
    out.mkdir()
    with pytest.raises(hls.SegmentingFailed):
        await asyncio.wait_for(hls.segment_with_ffmpeg(FFMPEG, evil, out, 1, 60), 90)
    assert not (out / "index.m3u8").exists()
    print(
        "\nffmpeg: a playlist source naming a worker-local file is refused (protocol and demuxer whitelists)"
    )
