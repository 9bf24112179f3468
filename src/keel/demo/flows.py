"""The demo's flows, one per product, each a few calls on the public APIs (and the broker where the
platform's only door is a topic). They take an httpx.AsyncClient, so the e2e test runs the same ones."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from keel.core.bus.message import OutgoingMessage
from keel.demo import publish
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
        return await client.get(t.url(t.orchestrator, f"/workflows/{route_id}"))

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
        response = await client.get(t.url(t.delivery, "/delivery/prefetch"), params=params)
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


async def videos(client: httpx.AsyncClient, t: Targets, step: StepReporter, timeout_s: float) -> None:
    body = {"title": "Keel demo", "url": f"https://cdn.example.com/demo-{uuid.uuid4().hex[:8]}.mp4"}
    created = _json(await client.post(t.url(t.videos, "/api/videos"), json=body), 201, "create video")
    step(f"video {created['id']} registered")
    video = await poll(
        lambda: client.get(t.url(t.videos, f"/api/videos/{created['id']}")),
        lambda r: r.status_code == 200 and r.json()["status"] in ("ready", "failed"),
        timeout_s=timeout_s,
        what=f"video {created['id']} processed",
    )
    check(video.json()["status"] == "ready", f"video failed: {video.json().get('error')}")
    step("ready")
    playlist = await client.get(t.url(t.videos, created["playlist_url"]))
    check(
        playlist.status_code == 200 and playlist.text.startswith("#EXTM3U"),
        f"playlist: HTTP {playlist.status_code} {playlist.text[:80]!r} is not #EXTM3U",
    )
    step(f"playlist: {playlist.text.count('#EXTINF')} segments")


FLOWS: dict[str, tuple[Flow, int]] = {
    # name → (flow, how many steps it reports, for the progress bar)
    "cityguide": (cityguide, 4),
    "tickets": (tickets, 4),
    "orders": (orders, 2),
    "videos": (videos, 3),
}
