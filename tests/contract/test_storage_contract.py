"""Object storage: one suite for every adapter — a local directory, an S3-compatible server (moto's,
on loopback: S3/MinIO is outside our system, so a real S3 protocol peer stands in for it) and
memory — plus the download links each hands out and the route that serves local ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from obstore.store import MemoryStore

from keel.core.app import create_app
from keel.core.errors import NotFound
from keel.core.settings import Settings
from keel.core.signing import UrlSigner
from keel.core.storage import (
    InvalidObjectKey,
    ObjectNotFound,
    ObjectStore,
    ObstoreObjectStore,
    build_object_store,
    signed_files_router,
)
from keel.core.storage.disposition import attachment_disposition
from tests.support.s3 import S3_SECRET, fresh_bucket, moto_server
from tests.support.sigv4 import Presigned, check_presigned_get, signed_at

NOW = 1_800_000_000.0
MiB = 1024 * 1024
Fetch = Callable[[str], Awaitable[httpx.Response]]


class Clock:
    """The signer's clock, moved by tests instead of sleeping."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


async def s3_settings(endpoint: str, **overrides: object) -> Settings:
    """Settings for a fresh bucket on the moto server."""
    return Settings(_env_file=None, **{**(await fresh_bucket(endpoint)), **overrides})  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signer(clock: Clock) -> UrlSigner:
    return UrlSigner("contract-secret", clock=clock)


@pytest_asyncio.fixture(params=["local", "s3", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, signer: UrlSigner) -> ObstoreObjectStore:
    if request.param == "local":
        return build_object_store(Settings(_env_file=None, object_store_dir=tmp_path / "objects"), signer)
    if request.param == "s3":
        return build_object_store(await s3_settings(request.getfixturevalue("s3_endpoint")), signer)
    return ObstoreObjectStore(MemoryStore(), signer=signer)


def files_app(store: ObjectStore, signer: UrlSigner) -> FastAPI:
    return create_app(
        title="files", settings=Settings(_env_file=None), routers=[signed_files_router(store, signer)]
    )


@pytest_asyncio.fixture
async def fetch(store: ObjectStore, signer: UrlSigner) -> AsyncIterator[Fetch]:
    """GET a download URL: absolute ones (presigned S3) over the network, our own relative links
    through the signed-files route in an app built by create_app."""
    async with (
        httpx.AsyncClient(timeout=30) as network,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(files_app(store, signer)), base_url="http://keel"
        ) as app,
    ):

        async def get(url: str) -> httpx.Response:
            return await (network if url.startswith("http") else app).get(url)

        yield get


async def chunks_of(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield chunk


# --- the port --------------------------------------------------------------------------------------


async def test_put_then_get_returns_the_bytes_and_keeps_the_content_type(store: ObjectStore) -> None:
    info = await store.put("tickets/a/report.pdf", b"%PDF-1.7 hello", content_type="application/pdf")
    assert (info.key, info.size, info.content_type) == ("tickets/a/report.pdf", 14, "application/pdf")
    assert info.etag
    assert await store.get("tickets/a/report.pdf") == b"%PDF-1.7 hello"


async def test_head_reports_size_type_and_etag(store: ObjectStore) -> None:
    put = await store.put("audio/1.wav", b"RIFF" * 100, content_type="audio/wav")
    head = await store.head("audio/1.wav")
    assert (head.size, head.content_type, head.etag) == (400, "audio/wav", put.etag)
    assert await store.exists("audio/1.wav")


async def test_content_type_defaults_to_octet_stream(store: ObjectStore) -> None:
    await store.put("blob", b"\x00\x01")
    assert (await store.head("blob")).content_type == "application/octet-stream"


async def test_a_streamed_upload_of_several_megabytes_round_trips(store: ObjectStore) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB, every byte value
    info = await store.put("big/blob.bin", chunks_of(chunk, 6), content_type="video/mp2t")
    assert (info.size, info.content_type) == (6 * MiB, "video/mp2t")
    assert (await store.head("big/blob.bin")).size == 6 * MiB
    assert await store.get("big/blob.bin") == chunk * 6


async def test_stream_yields_the_bytes_in_chunks_with_their_size_and_type(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    data = bytes(range(256)) * 12_288  # 3 MiB
    await store.put("big/stream.bin", data, content_type="audio/mpeg")
    info, chunks = await store.stream("big/stream.bin")
    received = [chunk async for chunk in chunks]
    assert (info.size, info.content_type) == (len(data), "audio/mpeg")
    if request.node.callspec.params["store"] != "memory":  # memory holds the object in one buffer
        assert len(received) > 1  # served in pieces, never read whole into memory first
    assert b"".join(received) == data


async def test_a_byte_range_streams_those_bytes_and_reports_the_whole_size(store: ObjectStore) -> None:
    data = bytes(range(256)) * 10
    await store.put("ranged/obj.bin", data, content_type="audio/wav")
    info, chunks = await store.stream("ranged/obj.bin", (100, 300))
    assert b"".join([chunk async for chunk in chunks]) == data[100:300]
    assert (info.size, info.content_type) == (len(data), "audio/wav")


async def test_an_upload_with_a_filename_keeps_its_content_disposition(store: ObjectStore) -> None:
    put = await store.put("named/obj", b"x", content_type="text/plain", filename="отчёт март.pdf")
    head = await store.head("named/obj")
    info, _ = await store.stream("named/obj")
    expected = attachment_disposition("отчёт март.pdf")
    assert put.content_disposition == head.content_disposition == info.content_disposition == expected
    await store.put("unnamed/obj", b"x")
    assert (await store.head("unnamed/obj")).content_disposition is None


async def test_put_replaces_the_bytes_and_the_content_type(store: ObjectStore) -> None:
    await store.put("doc", b"old", content_type="text/plain")
    await store.put("doc", b"<p>new</p>", content_type="text/html")
    head = await store.head("doc")
    assert (await store.get("doc"), head.size, head.content_type) == (b"<p>new</p>", 10, "text/html")


@pytest.mark.parametrize("key", ["speech/a.wav", "speech/a b#1.WAV"])
async def test_a_key_whose_extension_names_a_type_keeps_whichever_type_and_name_it_was_last_given(
    store: ObjectStore, key: str
) -> None:
    """Stored with its extension's type, with another, then with its own again (a local directory
    keeps no sidecar for the first: the one the second left must go), then under a download name."""
    for content_type, filename in [
        ("audio/wav", None),
        ("application/octet-stream", None),
        ("audio/wav", None),
        ("audio/wav", "речь.wav"),
        ("audio/wav", None),
    ]:
        await store.put(key, b"RIFF", content_type=content_type, filename=filename)
        head = await store.head(key)
        disposition = attachment_disposition(filename) if filename is not None else None
        assert (head.content_type, head.content_disposition) == (content_type, disposition)
    await store.delete(key)
    await store.put(key, b"RIFF", content_type="text/plain")
    assert (await store.head(key)).content_type == "text/plain"  # no sidecar outlived the delete


async def test_a_failed_streamed_upload_raises_its_error_and_stores_nothing(store: ObjectStore) -> None:
    class SourceBroke(Exception):
        pass

    async def breaks_midway() -> AsyncIterator[bytes]:
        yield b"x" * (6 * MiB)  # past one multipart part on S3
        raise SourceBroke

    await store.put("kept", b"original", content_type="text/plain")
    with pytest.raises(SourceBroke):
        await store.put("never", breaks_midway())
    with pytest.raises(SourceBroke):
        await store.put("kept", breaks_midway(), content_type="application/zip")
    assert not await store.exists("never")
    assert (await store.get("kept"), (await store.head("kept")).content_type) == (b"original", "text/plain")


async def test_delete_removes_the_object_and_deleting_again_is_not_an_error(store: ObjectStore) -> None:
    await store.put("gone/x.txt", b"x", content_type="text/plain")
    await store.delete("gone/x.txt")
    assert not await store.exists("gone/x.txt")
    await store.delete("gone/x.txt")
    await store.delete("never/was.txt")


@pytest.mark.parametrize("operation", ["get", "stream", "head"])
async def test_a_missing_key_is_object_not_found_which_maps_to_404(
    store: ObjectStore, operation: str
) -> None:
    with pytest.raises(ObjectNotFound) as raised:
        await getattr(store, operation)("never/was.txt")
    assert isinstance(raised.value, NotFound)
    assert raised.value.status_code == 404


async def test_keys_with_spaces_unicode_and_url_characters_round_trip(store: ObjectStore) -> None:
    key = "routes/42/аудио 1?#%&.wav"
    await store.put(key, b"RIFF", content_type="audio/wav")
    assert await store.get(key) == b"RIFF"


BAD_KEYS = [
    "../outside.txt",
    "a/../../outside.txt",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a/",
    ".",
    "..",
    "",
    "a\\..\\..\\b",
    "a\x00b",
    "a\nb",
    ".meta/x",
    "k" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_keys_that_could_escape_the_store_are_refused_by_every_operation(
    store: ObjectStore, key: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidObjectKey) as raised:
        await store.put(key, b"x")
    assert raised.value.status_code == 400
    for operation in (store.get, store.head, store.exists, store.delete):
        with pytest.raises(InvalidObjectKey):
            await operation(key)
    with pytest.raises(InvalidObjectKey):
        await store.download_url(key, 60)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["objects"])  # nothing beside the store


# --- download links --------------------------------------------------------------------------------


async def test_download_url_serves_the_object_before_it_expires(store: ObjectStore, fetch: Fetch) -> None:
    data = bytes(range(256)) * 4096
    await store.put("routes/42/аудио 1.wav", data, content_type="audio/wav")
    response = await fetch(await store.download_url("routes/42/аудио 1.wav", 3600))
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["content-length"] == str(len(data))


async def test_s3_download_url_is_a_presigned_get_valid_for_exactly_its_ttl(s3_endpoint: str) -> None:
    store = build_object_store(await s3_settings(s3_endpoint))
    await store.put("audio/1.wav", b"RIFF....WAVE", content_type="audio/wav")
    url = await store.download_url("audio/1.wav", 600)
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path.endswith("/audio/1.wav")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-SignedHeaders"] == ["host"]  # a plain browser GET carries everything signed
    start = signed_at(url)
    assert check_presigned_get(url, S3_SECRET, now=start + timedelta(seconds=600)) is Presigned.OK
    assert check_presigned_get(url, S3_SECRET, now=start + timedelta(seconds=601)) is Presigned.EXPIRED


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("X-Amz-Expires=600", "X-Amz-Expires=604800"),
        lambda url: url.replace("/audio/1.wav", "/audio/2.wav"),
        lambda url: url[:-1] + ("0" if url[-1] != "0" else "1"),
    ],
    ids=["longer-expiry", "other-object", "signature"],
)
async def test_a_tampered_s3_presigned_url_does_not_verify(
    s3_endpoint: str, tamper: Callable[[str], str]
) -> None:
    store = build_object_store(await s3_settings(s3_endpoint))
    url = await store.download_url("audio/1.wav", 600)
    assert check_presigned_get(tamper(url), S3_SECRET, now=signed_at(url)) is Presigned.BAD_SIGNATURE


@pytest_asyncio.fixture
async def local(
    tmp_path: Path, signer: UrlSigner
) -> AsyncIterator[tuple[ObstoreObjectStore, httpx.AsyncClient]]:
    store = build_object_store(Settings(_env_file=None, object_store_dir=tmp_path / "objects"), signer)
    transport = httpx.ASGITransport(files_app(store, signer))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield store, client


async def test_local_link_is_our_signed_route_and_serves_safe_headers(local, signer: UrlSigner) -> None:
    store, client = local
    await store.put("t/1/page.html", b"<script>alert(1)</script>", content_type="text/html")
    url = await store.download_url("t/1/page.html", 60)
    assert url.startswith(f"/files/t/1/page.html?exp={int(NOW) + 60}&kid=k1&sig=")
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"  # uploaded HTML runs no script


def _swap_sig(url: str) -> str:
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    return url.replace(f"sig={sig}", f"sig={'B' if sig[0] != 'B' else 'C'}{sig[1:]}")


@pytest.mark.parametrize(
    "tamper",
    [
        _swap_sig,
        lambda url: url.replace("t/1/a.txt", "t/1/b.txt"),
        lambda url: url.replace(f"exp={int(NOW) + 60}", f"exp={int(NOW) + 6000}"),
        lambda url: url.replace("kid=k1", "kid=k9"),
        lambda url: url.split("&sig=")[0],
        lambda url: url.split("?")[0],
    ],
    ids=["signature", "other-key", "longer-expiry", "unknown-key-id", "no-signature", "no-query"],
)
async def test_a_tampered_local_link_is_403_in_the_error_envelope(local, tamper) -> None:
    store, client = local
    await store.put("t/1/a.txt", b"hello", content_type="text/plain")
    await store.put("t/1/b.txt", b"other", content_type="text/plain")
    response = await client.get(tamper(await store.download_url("t/1/a.txt", 60)))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_a_local_link_is_served_through_the_skew_and_410_after_it(local, clock: Clock) -> None:
    store, client = local
    await store.put("t/1/a.txt", b"hello", content_type="text/plain")
    url = await store.download_url("t/1/a.txt", 60)
    clock.now = NOW + 60 + 30  # the signer allows 30 s of clock skew
    within = await client.get(url)
    clock.now = NOW + 60 + 31
    expired = await client.get(url)
    assert within.status_code == 200
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "gone"


async def test_a_valid_link_to_a_deleted_object_is_404(local) -> None:
    store, client = local
    await store.put("t/1/a.txt", b"hello")
    url = await store.download_url("t/1/a.txt", 60)
    await store.delete("t/1/a.txt")
    response = await client.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("raw_path", ["/files/%2E%2E/secret.txt", "/files/%2e%2e%2fsecret.txt"])
async def test_a_signed_link_to_a_traversal_key_still_cannot_leave_the_directory(
    local, signer: UrlSigner, tmp_path: Path, raw_path: str
) -> None:
    # Defence in depth: even a link we signed by mistake must not reach a file beside the store.
    _, client = local
    (tmp_path / "secret.txt").write_text("outside")
    link = signer.sign("/files/../secret.txt", 60)  # what the route sees once the path is decoded
    response = await client.get(f"{raw_path}?{link.query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert "outside" not in response.text


async def test_the_route_reads_store_and_signer_from_app_state_when_not_given(tmp_path: Path) -> None:
    # The runtime builds both in its lifespan, after the routes exist.
    signer = UrlSigner("state-secret")
    store = build_object_store(Settings(_env_file=None, object_store_dir=tmp_path), signer)
    await store.put("a.txt", b"from state", content_type="text/plain")
    app = create_app(title="files", settings=Settings(_env_file=None), routers=[signed_files_router()])
    app.state.object_store, app.state.url_signer = store, signer
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://keel") as client:
        response = await client.get(await store.download_url("a.txt", 60))
    assert (response.status_code, response.content) == (200, b"from state")


async def test_local_links_carry_the_public_base_url(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, object_store_dir=tmp_path, public_base_url="https://files.example/")
    url = await build_object_store(settings).download_url("a.txt", 60)
    assert url.startswith("https://files.example/files/a.txt?exp=")


async def test_a_local_object_of_its_extensions_type_is_one_file_and_hand_placed_ones_get_that_type(
    tmp_path: Path,
) -> None:
    root = tmp_path / "objects"
    store = build_object_store(Settings(_env_file=None, object_store_dir=root))
    await store.put("cityguide/audio/x.wav", b"RIFF", content_type="audio/wav")
    await store.put("videos/1/index.m3u8", b"#EXTM3U", content_type="application/vnd.apple.mpegurl")
    await store.put("videos/1/0.ts", b"G", content_type="video/mp2t")
    assert not (root / ".meta").exists()
    await store.put("cityguide/audio/y.wav", b"RIFF", content_type="audio/x-wav")
    assert (root / ".meta" / "cityguide" / "audio" / "y.wav").is_file()

    (root / "hand").mkdir()
    for name in ("placed.wav", "placed.html", "placed"):
        (root / "hand" / name).write_bytes(b"x")
    types = [
        (await store.head(f"hand/{name}")).content_type for name in ("placed.wav", "placed.html", "placed")
    ]
    assert types == ["audio/wav", "application/octet-stream", "application/octet-stream"]


# --- choosing an adapter ---------------------------------------------------------------------------


async def test_without_s3_settings_objects_are_files_under_the_data_dir(tmp_path: Path) -> None:
    store = build_object_store(Settings(_env_file=None, data_dir=tmp_path / "data"))
    await store.put("tickets/1/a.txt", b"on disk")
    assert (tmp_path / "data" / "objects" / "tickets" / "1" / "a.txt").read_bytes() == b"on disk"


async def test_with_an_s3_bucket_objects_go_to_s3_and_links_are_presigned(
    s3_endpoint: str, tmp_path: Path
) -> None:
    settings = await s3_settings(s3_endpoint, data_dir=tmp_path / "data")
    store = build_object_store(settings)
    await store.put("tickets/1/a.txt", b"in the bucket")
    url = await store.download_url("tickets/1/a.txt", 60)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
    assert url.startswith(f"{s3_endpoint}/{settings.s3_bucket}/tickets/1/a.txt?")
    assert "X-Amz-Signature=" in url
    assert response.content == b"in the bucket"
    assert not (tmp_path / "data" / "objects").exists()
