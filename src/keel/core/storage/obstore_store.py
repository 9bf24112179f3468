"""The obstore adapter of the object-storage port (local directory, S3-compatible, memory) and the
builder that picks one from settings."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
import orjson
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, MemoryStore, S3Store

from keel.core.settings import Settings
from keel.core.signing import UrlSigner
from keel.core.storage.disposition import attachment_disposition
from keel.core.storage.port import (
    DEFAULT_CONTENT_TYPE,
    RESERVED_PREFIX,
    ObjectNotFound,
    StoredObject,
    check_key,
)

if TYPE_CHECKING:
    from obstore import Attributes, GetOptions, GetResult
    from obstore.store import S3Config

STREAM_CHUNK = 256 * 1024
# obstore reports a missing object as FileNotFoundError from most calls, NotFoundError from some.
MISSING = (FileNotFoundError, NotFoundError)


# The types a key's extension names by itself. A local directory keeps no sidecar for an object of
# its extension's type and no download name: one file written per object instead of two (what that
# saves the TTS worker: bench/results/changes.md). A fixed table, not `mimetypes`, whose answers
# depend on the host's files: the process that writes and the one that reads must agree. Types a
# browser would run (HTML, SVG) are left out: a hand-placed file of those is served as bytes.
_NAMED_TYPES = {
    "json": "application/json",
    "m3u8": "application/vnd.apple.mpegurl",
    "mp4": "video/mp4",
    "ts": "video/mp2t",
    "wav": "audio/wav",
}
# Keys that name the same file under a local store's root (obstore encodes other characters).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._/-]+")


def _meta_key(key: str) -> str:
    return f"{RESERVED_PREFIX}/{key}"


def named_type(key: str) -> str | None:
    """The content type the key's extension names, if it is one of the table's."""
    stem, dot, extension = key.rpartition("/")[2].rpartition(".")
    return _NAMED_TYPES.get(extension.lower()) if dot and stem else None


class ObstoreObjectStore:
    """The port on any obstore store. The content type rides as an object attribute where the store
    keeps attributes (S3, memory) and in a small sidecar object where it cannot (a local directory),
    unless the key's extension names it.

    Download links: S3 presigns them; other stores hand out links to our own `signed_files_router`
    mounted at `files_prefix`, signed with `signer`, under `public_base_url` ("" = relative)."""

    def __init__(
        self,
        store: LocalStore | S3Store | MemoryStore,
        *,
        signer: UrlSigner | None = None,
        files_prefix: str = "/files",
        public_base_url: str = "",
    ) -> None:
        self._store = store
        self._sidecar = isinstance(store, LocalStore)  # LocalStore refuses attributes on put
        self._signer = signer
        self._files_prefix = "/" + files_prefix.strip("/")
        self._base = public_base_url.rstrip("/")

    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        filename: str | None = None,
    ) -> StoredObject:
        check_key(key)
        disposition = attachment_disposition(filename) if filename is not None else None
        size = 0

        async def counted(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
            # Counting on the way through saves a HEAD round trip after the upload.
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        body = data if isinstance(data, bytes) else counted(data)
        if self._sidecar:
            # Bytes first: a failed upload leaves the old object and its type as they were.
            result = await obstore.put_async(self._store, key, body)
            if disposition is None and content_type == named_type(key):
                await self._drop_sidecar(key)  # one an earlier put of another type left
            else:
                meta = {"content_type": content_type, "content_disposition": disposition}
                await obstore.put_async(self._store, _meta_key(key), orjson.dumps(meta))
        else:
            # S3 keeps both and sends them with the object, presigned links included.
            attributes: Attributes = {"Content-Type": content_type}
            if disposition is not None:
                attributes["Content-Disposition"] = disposition
            result = await obstore.put_async(self._store, key, body, attributes=attributes)
        if isinstance(data, bytes):
            size = len(data)
        return StoredObject(
            key=key,
            size=size,
            content_type=content_type,
            etag=result["e_tag"],
            content_disposition=disposition,
        )

    async def get(self, key: str) -> bytes:
        result = await self._get(key)
        return bytes(await result.bytes_async())

    async def stream(
        self, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[StoredObject, AsyncIterator[bytes]]:
        # One GET gives the metadata and the body, so the size always matches the bytes sent, even
        # if the object is replaced meanwhile.
        result = await self._get(key, byte_range=byte_range)
        info = await self._describe(key, result)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                yield bytes(chunk)

        return info, chunks()

    async def head(self, key: str) -> StoredObject:
        return await self._describe(key, await self._get(key, head=True))

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        check_key(key)
        with contextlib.suppress(*MISSING):  # already gone: deleting is idempotent
            await obstore.delete_async(self._store, key)
        if self._sidecar:
            await self._drop_sidecar(key)

    async def download_url(self, key: str, ttl_s: int) -> str:
        check_key(key)
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if isinstance(self._store, S3Store):
            url: str = await obstore.sign_async(self._store, "GET", key, timedelta(seconds=ttl_s))
            return url
        if self._signer is None:
            raise RuntimeError("an object store that cannot presign needs a UrlSigner for its links")
        return self._signer.sign(f"{self._files_prefix}/{key}", ttl_s).url(self._base)

    async def _get(
        self, key: str, *, head: bool = False, byte_range: tuple[int, int] | None = None
    ) -> GetResult:
        check_key(key)
        options: GetOptions = {"head": head}
        if byte_range is not None:
            options["range"] = byte_range
        try:
            return await obstore.get_async(self._store, key, options=options)
        except MISSING:
            raise ObjectNotFound(f"object {key!r} not found") from None

    async def _describe(self, key: str, result: GetResult) -> StoredObject:
        meta = result.meta
        if self._sidecar:
            content_type, disposition = await self._sidecar_meta(key)
        else:
            content_type = str(result.attributes.get("Content-Type", DEFAULT_CONTENT_TYPE))
            found = result.attributes.get("Content-Disposition")
            disposition = str(found) if found is not None else None
        return StoredObject(
            key=key,
            size=int(meta["size"]),
            content_type=content_type,
            etag=meta["e_tag"],
            content_disposition=disposition,
        )

    async def _drop_sidecar(self, key: str) -> None:
        root = self._store.prefix if isinstance(self._store, LocalStore) else None
        # One stat of a local file on the loop: far cheaper than a delete through obstore's threads.
        sidecar = root / _meta_key(key) if root is not None and _PLAIN_KEY.fullmatch(key) else None
        if sidecar is not None and not os.path.lexists(sidecar):  # noqa: ASYNC240
            return
        with contextlib.suppress(*MISSING):
            await obstore.delete_async(self._store, _meta_key(key))

    async def _sidecar_meta(self, key: str) -> tuple[str, str | None]:
        try:
            raw = await obstore.get_async(self._store, _meta_key(key))
        except MISSING:
            # The type the key names, or written by hand into the directory: nothing known.
            return named_type(key) or DEFAULT_CONTENT_TYPE, None
        meta = orjson.loads(bytes(await raw.bytes_async()))
        content_type, disposition = meta.get("content_type"), meta.get("content_disposition")
        return (
            content_type if isinstance(content_type, str) else DEFAULT_CONTENT_TYPE,
            disposition if isinstance(disposition, str) else None,
        )


def _s3_store(bucket: str, settings: Settings) -> S3Store:
    config: S3Config = {"region": settings.s3_region}
    # Unset credentials are left to obstore, which reads AWS_* variables and instance credentials.
    if settings.s3_access_key_id:
        config["access_key_id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        config["secret_access_key"] = settings.s3_secret_access_key
    if settings.s3_endpoint_url:
        config["endpoint"] = settings.s3_endpoint_url
        # MinIO and most S3-compatible servers address buckets by path, not by host name.
        config["virtual_hosted_style_request"] = False
    allow_http = (settings.s3_endpoint_url or "").startswith("http://")
    return S3Store(bucket, config=config, client_options={"allow_http": True} if allow_http else None)


def build_object_store(settings: Settings, signer: UrlSigner | None = None) -> ObstoreObjectStore:
    """S3 when `S3_BUCKET` is set, else a directory: `OBJECT_STORE_DIR`, or `<data dir>/objects`."""
    signer = signer or UrlSigner(settings.secret)
    if settings.s3_bucket:
        return ObstoreObjectStore(_s3_store(settings.s3_bucket, settings), signer=signer)
    root = (settings.object_store_dir or settings.data_dir / "objects").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return ObstoreObjectStore(LocalStore(root), signer=signer, public_base_url=settings.public_base_url)
