"""Delivery prefetch in the real app: tts.completed fed through the bus into Redis, signed links out,
and the CDN-side verifier serving the bytes only for a valid, unexpired link."""

from __future__ import annotations

import logging
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from keel.cityguide import topics
from keel.cityguide.audio import audio_key, cdn_path
from keel.cityguide.delivery.spec import SPEC
from keel.core.consumer import ConsumerRunner
from keel.core.settings import DEFAULT_SECRET
from keel.core.signing import UrlSigner
from tests.integration.cityguide.conftest import serving
from tests.integration.cityguide.support import publish_ready
from tests.support.eventually import eventually

WAV = b"RIFF" + b"\0" * 4 + b"WAVEfmt " + b"\x01" * 200


@pytest.fixture
def route_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


async def _ready(client, route_id, count):
    return await eventually(
        lambda: client.get("/delivery/prefetch", params={"route_id": route_id, "next": 50}),
        until=lambda r: r.status_code == 200 and len(r.json()["items"]) >= count,
        what=f"{count} ready audio",
    )


async def test_prefetch_returns_the_next_n_signed_links_in_story_order_without_duplicates(
    make_settings, redis_url, route_id
):
    async with serving([SPEC], make_settings(redis_url=redis_url), embedded=True) as (app, client):
        await publish_ready(app, route_id, [2, 0, 3, 1], copies=2)
        every = await _ready(client, route_id, 4)
        first = await client.get("/delivery/prefetch", params={"route_id": route_id})
        page = await client.get(
            "/delivery/prefetch", params={"route_id": route_id, "next": 2, "after": f"{route_id}-a1"}
        )
    assert [i["audio_id"] for i in every.json()["items"]] == [f"{route_id}-a{n}" for n in range(4)]
    items = first.json()["items"]
    assert [i["audio_id"] for i in items] == [f"{route_id}-a{n}" for n in range(3)]  # default next=3
    link = urlsplit(items[0]["url"])
    query = parse_qs(link.query)
    assert link.path == cdn_path(f"{route_id}-a0")
    assert len(query["sig"][0]) == 8 and query["kid"] == ["k1"]
    assert items[0]["ttl"] == 3600
    assert [i["audio_id"] for i in page.json()["items"]] == [f"{route_id}-a2", f"{route_id}-a3"]


@pytest.mark.parametrize(
    "params",
    [
        {"next": 3},
        {"route_id": "r", "next": 0},
        {"route_id": "r", "next": 51},
        {"route_id": "r", "next": "x"},
    ],
    ids=["no-route", "next-0", "next-51", "next-text"],
)
async def test_prefetch_without_route_or_with_next_outside_1_to_50_is_422(make_settings, params):
    async with serving([SPEC], make_settings(), embedded=True) as (_, client):
        response = await client.get("/delivery/prefetch", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_prefetch_after_an_unknown_audio_is_404(make_settings, route_id):
    async with serving([SPEC], make_settings(), embedded=True) as (_, client):
        response = await client.get("/delivery/prefetch", params={"route_id": route_id, "after": "nope"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_the_cdn_verifier_serves_a_valid_link_and_refuses_tampered_expired_and_malformed_ones(
    make_settings, route_id
):
    audio_id = f"{route_id}-a0"
    async with serving([SPEC], make_settings(), embedded=True) as (app, client):
        await app.state.infra.storage.put(audio_key(audio_id), WAV, content_type="audio/wav")
        await publish_ready(app, route_id, [0])
        [item] = (await _ready(client, route_id, 1)).json()["items"]
        ok = await client.get(item["url"])
        sig = parse_qs(urlsplit(item["url"]).query)["sig"][0]
        tampered = await client.get(
            item["url"].replace(f"sig={sig}", f"sig={'A' if sig[0] != 'A' else 'B'}{sig[1:]}")
        )
        other_audio = await client.get(item["url"].replace(audio_id, f"{route_id}-a9"))
        # Signed two hours ago for one hour, with the same SECRET.
        expired_link = UrlSigner(DEFAULT_SECRET, clock=lambda: time.time() - 7200).sign(
            cdn_path(audio_id), 3600
        )
        expired = await client.get(expired_link.url())
        malformed = await client.get(f"{cdn_path(audio_id)}?exp=soon&sig=abc")
    assert ok.status_code == 200 and ok.content == WAV and ok.headers["content-type"] == "audio/wav"
    assert (tampered.status_code, tampered.json()["error"]["code"]) == (403, "forbidden")
    assert other_audio.status_code == 403
    assert (expired.status_code, expired.json()["error"]["code"]) == (410, "gone")
    assert malformed.status_code == 403


async def test_a_lone_delivery_service_without_brokers_runs_no_consumer_and_says_so(make_settings, caplog):
    caplog.set_level(logging.WARNING, logger="keel.cityguide.delivery")
    async with serving([SPEC], make_settings()) as (app, _):
        lone = [w for w in app.state.supervisor.workers if isinstance(w, ConsumerRunner)]
    async with serving([SPEC], make_settings(), embedded=True) as (app, _):
        embedded = [w for w in app.state.supervisor.workers if isinstance(w, ConsumerRunner)]
    assert lone == []
    assert [w.topics for w in embedded] == [(topics.TTS_COMPLETED,)]
    assert any("without a tts.completed consumer" in r.getMessage() for r in caplog.records)


async def test_the_cdn_link_answers_head_and_ranges_so_a_player_can_seek(make_settings, route_id):
    audio_id = f"{route_id}-a0"
    async with serving([SPEC], make_settings(), embedded=True) as (app, client):
        await app.state.infra.storage.put(audio_key(audio_id), WAV, content_type="audio/wav")
        await publish_ready(app, route_id, [0])
        [item] = (await _ready(client, route_id, 1)).json()["items"]
        head = await client.head(item["url"])
        seek = await client.get(item["url"], headers={"Range": "bytes=12-"})
        past_the_end = await client.get(item["url"], headers={"Range": "bytes=5000-5001"})
        again = await client.get(item["url"], headers={"If-None-Match": head.headers["etag"]})
        forged_head = await client.head(item["url"].replace(audio_id, f"{route_id}-a9"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(WAV)) and head.headers["accept-ranges"] == "bytes"
    assert head.headers["content-type"] == "audio/wav"
    assert seek.status_code == 206 and seek.content == WAV[12:]
    assert seek.headers["content-range"] == f"bytes 12-{len(WAV) - 1}/{len(WAV)}"
    assert past_the_end.status_code == 416 and past_the_end.headers["content-range"] == f"bytes */{len(WAV)}"
    assert again.status_code == 304
    assert forged_head.status_code == 403


async def test_during_a_key_rotation_links_of_the_previous_secret_still_serve_and_new_ones_use_the_new_key(
    make_settings, route_id
):
    """SECRET_KEY_ID and PREVIOUS_SECRETS (docs/cdn-signed-links.md): a process signing with k2 hands
    out k2 links and still serves links handed out under k1 until k1 leaves the list; a k1 link signed
    with a secret it does not know is refused."""
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    settings = make_settings(secret=new, secret_key_id="k2", previous_secrets=f"k1:{old}")
    audio_id = f"{route_id}-a0"
    async with serving([SPEC], settings, embedded=True) as (app, client):
        storage = app.state.infra.storage
        await storage.put(audio_key(audio_id), WAV, content_type="audio/wav")
        await publish_ready(app, route_id, [0])
        [item] = (await _ready(client, route_id, 1)).json()["items"]
        handed_out = parse_qs(urlsplit(item["url"]).query)["kid"]
        before = UrlSigner(old, key_id="k1").sign(cdn_path(audio_id), 600).url()
        stranger = UrlSigner(f"other-{uuid.uuid4().hex}", key_id="k1").sign(cdn_path(audio_id), 600).url()
        cdn_old, cdn_stranger = [await client.get(url) for url in (before, stranger)]
    assert handed_out == ["k2"]
    assert cdn_old.status_code == 200 and cdn_old.content == WAV
    assert cdn_stranger.status_code == 403
