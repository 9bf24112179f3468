"""The services with their objects in S3 (`S3_BUCKET`, `S3_ENDPOINT_URL`: an S3-compatible server on
loopback, as MinIO is under the compose file), where the storage contract suite tests the adapter
alone: a ticket attachment uploaded through the API and downloaded through its presigned link, and a
cityguide audio served through the signed CDN route with HEAD and a byte range for seeking."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from keel.cityguide.audio import audio_key
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.core.settings import Settings
from keel.tickets.spec import SPEC as TICKETS
from tests.integration.cityguide.conftest import serving as serving_cityguide
from tests.integration.cityguide.support import publish_ready
from tests.support.eventually import eventually
from tests.support.s3 import fresh_bucket, moto_server
from tests.support.serving import serving_app

WAV = b"RIFF" + b"\0" * 4 + b"WAVEfmt " + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


async def test_a_ticket_attachment_goes_to_the_bucket_and_its_presigned_link_downloads_it(
    s3_endpoint: str, fresh_pg_dsn: str, redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        postgres_dsn=fresh_pg_dsn, redis_url=redis_url, **(await fresh_bucket(s3_endpoint))
    )
    user = {"X-User-Id": f"s3-{uuid.uuid4().hex[:8]}"}
    data = b"%PDF-1.7 " + bytes(range(256)) * 400
    async with serving_app([TICKETS], settings) as (_, client):
        ticket = (
            await client.post(
                "/v1/tickets", json={"title": "Printer on fire", "description": "Third floor."}, headers=user
            )
        ).json()
        uploaded = await client.post(
            f"/v1/tickets/{ticket['id']}/attachments",
            files={"file": ("отчёт.pdf", data, "application/pdf")},
            headers=user,
        )
        assert uploaded.status_code == 201, uploaded.text
        [listed] = (await client.get(f"/v1/tickets/{ticket['id']}/attachments", headers=user)).json()
    link = listed["download_url"]
    assert urlsplit(link).netloc == urlsplit(s3_endpoint).netloc  # presigned by S3, not served by Keel
    async with httpx.AsyncClient(timeout=30) as s3:
        whole = await s3.get(link)
        part = await s3.get(link, headers={"Range": "bytes=0-7"})
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == listed["sha256"]
    assert whole.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf" in whole.headers["content-disposition"]
    assert (part.status_code, part.content) == (206, data[:8])


async def test_a_cityguide_audio_in_the_bucket_is_served_through_the_signed_cdn_route(
    s3_endpoint: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(**(await fresh_bucket(s3_endpoint)))
    route_id = f"r-{uuid.uuid4().hex[:8]}"
    async with serving_cityguide([DELIVERY], settings, embedded=True) as (app, client):
        await app.state.infra.storage.put(audio_key(f"{route_id}-a0"), WAV, content_type="audio/wav")
        await publish_ready(app, route_id, [0])
        page = await eventually(
            lambda: client.get("/delivery/prefetch", params={"route_id": route_id, "next": 5}),
            until=lambda r: r.status_code == 200 and len(r.json()["items"]) == 1,
            what="the ready audio",
        )
        url = page.json()["items"][0]["url"]
        whole = await client.get(url)
        head = await client.head(url)
        seek = await client.get(url, headers={"Range": "bytes=100-199"})
    assert whole.status_code == 200 and whole.content == WAV and whole.headers["content-type"] == "audio/wav"
    assert head.status_code == 200 and head.headers["content-length"] == str(len(WAV)) and head.content == b""
    assert seek.status_code == 206 and seek.content == WAV[100:200]
    assert seek.headers["content-range"] == f"bytes 100-199/{len(WAV)}"
