"""The demo's flows, one per product, each a few calls on the public APIs (and the broker where the
platform's only door is a topic). They take an httpx.AsyncClient, so the e2e test runs the same ones."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from keel.core.bus.message import OutgoingMessage
from keel.demo import media, publish
from keel.demo.steps import FlowSkipped, StepReporter, check, poll
from keel.demo.targets import Targets

USER = {"X-User-Id": "keel-demo"}
ORDER_COUNT = 3
ATTACHMENT = b"keel demo attachment\n" * 8

Flow = Callable[[httpx.AsyncClient, Targets, StepReporter, float], Awaitable[None]]


async def _publish(client: httpx.AsyncClient, t: Targets, messages: list[OutgoingMessage], why: str) -> None:
    """To the brokers when given; else through the embedded platform's dev door; else the flow skips."""
    if t.brokers:
        await publish.send(t.brokers, messages)
    elif t.platform:
        await publish.send_via_platform(client, t.platform, messages)
    else:
        raise FlowSkipped(f"needs a broker (--brokers): {why}")


def _json(response: httpx.Response, status: int, what: str) -> Any:
    check(response.status_code == status, f"{what}: HTTP {response.status_code} {response.text[:200]}")
    return response.json()


async def cityguide(client: httpx.AsyncClient, t: Targets, step: StepReporter, timeout_s: float) -> None:
    route_id = f"demo-{uuid.uuid4().hex[:10]}"
    await _publish(client, t, [publish.route_confirmed(route_id)], "route.confirmed has no HTTP door")
    step("route.confirmed published")

    async def workflow() -> httpx.Response:
        return await client.get(t.url(t.orchestrator, f"/workflows/{route_id}"), headers=USER)

    done = await poll(
        workflow,
        lambda r: r.status_code == 200 and r.json()["status"] in ("completed", "failed"),
        timeout_s=timeout_s,
        what=f"workflow {route_id} finished",
    )
    view = done.json()
    check(view["status"] == "completed", f"workflow {route_id} is {view['status']}: {view.get('steps')}")
    step(f"workflow completed ({len(view['jobs'])} stories)")

    async def prefetch() -> list[dict[str, Any]]:
        params = {"route_id": route_id, "next": str(len(publish.POINTS))}
        response = await client.get(t.url(t.delivery, "/delivery/prefetch"), params=params, headers=USER)
        return list(_json(response, 200, "prefetch")["items"])

    items = await poll(
        prefetch, lambda got: len(got) == len(publish.POINTS), timeout_s=timeout_s, what="prefetch links"
    )
    step(f"{len(items)} signed links")
    for item in items:
        audio = await client.get(t.url(t.delivery, item["url"]))
        check(audio.status_code == 200, f"audio {item['audio_id']}: HTTP {audio.status_code}")
        check(audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE", "audio is not RIFF/WAVE")
    step(f"{len(items)} WAV files downloaded")


async def tickets(client: httpx.AsyncClient, t: Targets, step: StepReporter, timeout_s: float) -> None:
    body = {"title": "Demo: broken elevator", "description": "Created by keel demo."}
    headers = {**USER, "Idempotency-Key": f"demo-{uuid.uuid4().hex}"}
    created = _json(
        await client.post(t.url(t.tickets, "/v1/tickets"), json=body, headers=headers), 201, "create"
    )
    again = await client.post(t.url(t.tickets, "/v1/tickets"), json=body, headers=headers)
    check(again.headers.get("Idempotent-Replayed") == "true", "a repeated create was not replayed")
    check(again.json()["id"] == created["id"], "a repeated create made a second ticket")
    step("created (and replayed by Idempotency-Key)")
    base = t.url(t.tickets, f"/v1/tickets/{created['id']}")
    files = {"file": ("notes.txt", ATTACHMENT, "text/plain")}
    attachment = _json(await client.post(f"{base}/attachments", files=files, headers=USER), 201, "attach")
    step(f"attached {attachment['size_bytes']} bytes")
    download = await client.get(t.url(t.tickets, attachment["download_url"]))
    check(download.status_code == 200 and download.content == ATTACHMENT, "downloaded attachment differs")
    step("downloaded through its signed link")
    closed = _json(await client.post(f"{base}/close", headers=USER), 200, "close")
    check(closed["status"] == "CLOSED", f"ticket is {closed['status']} after close")
    step("closed")


async def orders(client: httpx.AsyncClient, t: Targets, step: StepReporter, timeout_s: float) -> None:
    uids, messages = publish.orders(ORDER_COUNT, random.Random())  # demo data, not security
    await _publish(client, t, messages, "orders arrive only on the orders topic")
    step(f"{len(uids)} orders published")
    sources = []
    for uid in uids:
        get = functools.partial(client.get, t.url(t.orders, f"/order/{uid}"))
        found = await poll(get, lambda r: r.status_code == 200, timeout_s=timeout_s, what=f"order {uid}")
        check(found.json()["order_uid"] == uid, f"order {uid} answered another order")
        sources.append(found.headers.get("X-Source", "?"))
    step(f"read back (X-Source: {', '.join(sorted(set(sources)))})")


async def _register_video(client: httpx.AsyncClient, t: Targets, source: str, step: StepReporter) -> Any:
    """The demo's own clip as the source; a platform that does not fetch it refuses it (loopback is not
    on its allow-list) and gets a placeholder URL instead, which the default mode never downloads."""
    url = t.url(t.videos, "/api/videos")
    response = await client.post(url, json={"title": "Keel demo", "url": source}, headers=USER)
    if response.status_code == 422 and "source_refused" in response.text:
        placeholder = f"https://cdn.example.com/demo-{uuid.uuid4().hex[:8]}.mp4"
        created = _json(
            await client.post(url, json={"title": "Keel demo", "url": placeholder}, headers=USER),
            201,
            "create",
        )
        step(f"video {created['id']} registered (placeholder source)")
        return created
    created = _json(response, 201, "create video")
    step(f"video {created['id']} registered (source: the demo's clip)")
    return created


async def videos(client: httpx.AsyncClient, t: Targets, step: StepReporter, timeout_s: float) -> None:
    async with media.serve_clip("Keel demo", t.video_source_port) as source:
        created = await _register_video(client, t, source, step)
        video = await poll(
            lambda: client.get(t.url(t.videos, f"/api/videos/{created['id']}"), headers=USER),
            lambda r: r.status_code == 200 and r.json()["status"] in ("ready", "failed"),
            timeout_s=timeout_s,
            what=f"video {created['id']} processed",
        )
    error = video.json().get("error") or ""
    hint = ""
    if error.startswith("source_"):
        port = urlsplit(source).port
        hint = f" (HLS_MODE=ffmpeg fetches sources: allow the demo's with VIDEO_FETCH_ALLOW_HOSTS={media.HOST}:{port})"
    check(video.json()["status"] == "ready", f"video failed: {error}{hint}")
    step("ready")
    playlist_url = t.url(t.videos, created["playlist_url"])
    playlist = await client.get(playlist_url)
    check(
        playlist.status_code == 200 and playlist.text.startswith("#EXTM3U"),
        f"playlist: HTTP {playlist.status_code} {playlist.text[:80]!r} is not #EXTM3U",
    )
    uris = [line for line in playlist.text.splitlines() if line and not line.startswith("#")]
    check(bool(uris), "the playlist names no segment")
    step(f"playlist: {len(uris)} segments")
    segment = await client.get(urljoin(playlist_url, uris[0]))
    check(segment.status_code == 200, f"segment {uris[0]}: HTTP {segment.status_code}")
    errors = await media.decode(segment.content)
    check(not errors, f"segment {uris[0]} does not decode: {errors[:200]}")
    step(f"segment decoded by ffmpeg ({len(segment.content)} bytes)")


FLOWS: dict[str, tuple[Flow, int]] = {
    # name → (flow, how many steps it reports, for the progress bar)
    "cityguide": (cityguide, 4),
    "tickets": (tickets, 4),
    "orders": (orders, 2),
    "videos": (videos, 4),
}
