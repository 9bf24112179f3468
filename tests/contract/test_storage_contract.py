"""Object storage: one suite, two adapters — a local directory and an S3-compatible server (moto's,
on loopback: S3/MinIO is outside our system, so a real S3 protocol peer stands in for it)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from keel.core.app import create_app
from keel.core.errors import BadRequest
from keel.core.settings import Settings
from keel.core.signing import UrlSigner
from keel.core.storage import ObjectNotFound, ObstoreObjectStore, build_object_store, signed_files_router
from tests.support.servers import free_port, wait_for_port

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _s3_settings(endpoint: str, bucket: str) -> Settings:
    return Settings(
        _env_file=None,
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )


@pytest_asyncio.fixture(params=["local", "s3"])
async def store(request, tmp_path: Path) -> AsyncIterator[ObstoreObjectStore]:
    signer = UrlSigner("test-secret")
    if request.param == "local":
        yield build_object_store(Settings(_env_file=None, object_store_dir=tmp_path / "objects"), signer)
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"keel-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient() as client:  # create the bucket (moto accepts unsigned admin calls)
        assert (await client.put(f"{endpoint}/{bucket}")).status_code == 200
    yield build_object_store(_s3_settings(endpoint, bucket), signer)


async def test_put_and_get_round_trip_bytes_and_content_type(store):
    info = await store.put("tickets/a/report.pdf", b"%PDF-1.7 hello", content_type="application/pdf")
    assert info.size == 14
    assert info.content_type == "application/pdf"
    assert await store.get("tickets/a/report.pdf") == b"%PDF-1.7 hello"
    head = await store.head("tickets/a/report.pdf")
    assert (head.size, head.content_type) == (14, "application/pdf")


async def test_streamed_upload_of_several_megabytes(store):
    chunk = bytes(range(256)) * 4096  # 1 MiB

    async def chunks():
        for _ in range(5):
            yield chunk
            await asyncio.sleep(0)

    info = await store.put("big/blob.bin", chunks())
    assert info.size == 5 * len(chunk)
    _, stream = await store.stream("big/blob.bin")
    received = b"".join([c async for c in stream])
    assert received == chunk * 5


async def test_delete_removes_the_object_and_missing_keys_are_not_found(store):
    await store.put("gone/x.txt", b"x", content_type="text/plain")
    await store.delete("gone/x.txt")
    with pytest.raises(ObjectNotFound):
        await store.get("gone/x.txt")
    with pytest.raises(ObjectNotFound):
        await store.head("never/was.txt")
    await store.delete("never/was.txt")  # deleting what is not there is not an error


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "a/../b", "a//b", "", ".meta/x", "a\\b"])
async def test_keys_that_could_escape_the_store_are_refused(store, key):
    with pytest.raises(BadRequest):
        await store.put(key, b"x")


async def test_s3_download_url_is_a_sigv4_presigned_get_that_serves_the_object(s3_endpoint):
    # moto serves presigned URLs without checking their signature or expiry (S3 and MinIO do), so
    # this checks the URL's SigV4 contract and that it reaches the object; expiry is the store's job.
    bucket = f"keel-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient() as client:
        await client.put(f"{s3_endpoint}/{bucket}")
        store = build_object_store(_s3_settings(s3_endpoint, bucket), UrlSigner("x"))
        await store.put("audio/1.wav", b"RIFF....WAVE", content_type="audio/wav")
        url = await store.download_url("audio/1.wav", 60)
        ok = await client.get(url)
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == f"/{bucket}/audio/1.wav"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["60"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
    assert len(query["X-Amz-Signature"][0]) == 64
    assert (ok.status_code, ok.content) == (200, b"RIFF....WAVE")


async def test_local_download_url_is_served_by_the_signed_route_and_refused_when_tampered(tmp_path):
    clock = [NOW]
    signer = UrlSigner("s3cret", clock=lambda: clock[0])
    store = build_object_store(Settings(_env_file=None, object_store_dir=tmp_path), signer)
    await store.put("t/1/a.txt", b"hello", content_type="text/plain")
    app = create_app(title="files", settings=Settings(_env_file=None), routers=[signed_files_router()])
    app.state.object_store, app.state.url_signer = store, signer
    url = await store.download_url("t/1/a.txt", 60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        ok = await client.get(url)
        other = await client.get(url.replace("t/1/a.txt", "t/1/b.txt"))
        clock[0] = NOW + 1000
        expired = await client.get(url)
    assert (ok.status_code, ok.content, ok.headers["content-type"]) == (
        200,
        b"hello",
        "text/plain; charset=utf-8",
    )
    assert other.status_code == 403
    assert expired.status_code == 410
