"""`keel demo` against the embedded platform (`keel up`: every service in one process, memory bus,
no broker): every flow ends green — the dev bus door stands in for a console producer — and in
HLS_MODE=ffmpeg the videos flow serves its own clip on loopback for the platform to fetch; against
processes with no door and no broker the topic-fed flows are skipped; a failed flow exits 1."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from keel import services
from keel.core.runtime import build_app
from keel.demo.scenario import run_all
from keel.demo.targets import Targets
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec
from tests.support.servers import free_port


async def test_demo_against_keel_up_ends_with_every_flow_green(fresh_pg_dsn, make_settings, monkeypatch):
    monkeypatch.setenv("TTS_MODE", "instant")
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    app = build_app(services.load_all(), make_settings(postgres_dsn=fresh_pg_dsn), embedded=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://platform") as client,
    ):
        results = await run_all(client, Targets.single("http://platform"), timeout_s=60)
    print(*(f"{r.name}: {r.status} in {r.elapsed_s:.1f}s ({len(r.steps)} steps)" for r in results), sep="\n")
    assert [(r.name, r.status, r.detail) for r in results] == [
        (name, "ok", "") for name in ("cityguide", "tickets", "orders", "videos")
    ]
    # The default mode fetches nothing: the demo's loopback clip is refused, a placeholder is made into
    # a real clip, and one of its segments decodes.
    videos = results[-1]
    assert "(placeholder source)" in videos.steps[0]
    assert videos.steps[-1].startswith("segment decoded by ffmpeg")


async def test_demo_in_ffmpeg_mode_serves_its_own_clip_which_the_platform_fetches_and_segments(
    fresh_pg_dsn, make_settings
):
    port = free_port()
    videos = VideoSettings(
        _env_file=None,  # type: ignore[call-arg]
        HLS_MODE="ffmpeg",
        VIDEO_FETCH_ALLOW_HOSTS=f"127.0.0.1:{port}",
        VIDEOS_TOPIC=f"videos.events-{port}",
        VIDEOS_GROUP_ID=f"videos-hls-{port}",
    )
    app = build_app([build_spec(videos)], make_settings(postgres_dsn=fresh_pg_dsn), embedded=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://platform") as client,
    ):
        (result,) = await run_all(
            client, Targets.single("http://platform", video_source_port=port), timeout_s=60, names=["videos"]
        )
    assert (result.status, result.detail) == ("ok", ""), result.steps
    assert "(source: the demo's clip)" in result.steps[0]
    assert result.steps[-1].startswith("segment decoded by ffmpeg")


async def test_dev_bus_door_refuses_unknown_topics_and_exists_only_under_keel_up(fresh_pg_dsn, make_settings):
    from keel.tickets.spec import SPEC

    settings = make_settings(postgres_dsn=fresh_pg_dsn)
    embedded = build_app([SPEC], settings, embedded=True)
    served = build_app([SPEC], settings)
    async with embedded.router.lifespan_context(embedded), served.router.lifespan_context(served):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(embedded), base_url="http://t") as client:
            unknown = await client.post("/_dev/bus/not-a-topic", content=b"{}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(served), base_url="http://t") as client:
            absent = await client.post("/_dev/bus/tickets.events", content=b"{}")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert absent.status_code == 404  # `keel serve` has no such door: the broker is the door there


@pytest.mark.parametrize(
    "targets",
    [
        Targets(
            "http://platform", "http://platform", "http://platform", "http://platform", "http://platform"
        ),
        Targets.single("http://platform"),
    ],
    ids=["a URL per service", "one URL that is not keel up"],
)
async def test_against_processes_without_a_broker_the_topic_fed_flows_are_skipped_not_failed(
    fresh_pg_dsn, make_settings, targets
):
    # As `keel serve` serves them: no dev bus door, and the demo was given no --brokers.
    specs = [services.load("orders"), services.load("orchestrator")]
    app = build_app(specs, make_settings(postgres_dsn=fresh_pg_dsn), run_workers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://platform") as client,
    ):
        results = await run_all(client, targets, timeout_s=10, names=["orders", "cityguide"])
    assert [(r.name, r.status) for r in results] == [("orders", "skipped"), ("cityguide", "skipped")]
    assert all("--brokers" in r.detail for r in results), [r.detail for r in results]


def test_keel_demo_exits_1_when_a_flow_fails(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "demo", "--base-url", nowhere, "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "Traceback" not in done.stdout + done.stderr, done.stdout
