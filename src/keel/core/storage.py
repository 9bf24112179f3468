"""Object storage: one port, two adapters on obstore — a local directory (default) and an
S3-compatible store (MinIO, S3) — and download links that expire.

S3 links are real presigned GET URLs. A local directory cannot presign, so its links point at our
own route (`signed_files_router`) carrying an HMAC signature (keel.core.signing) that the route
verifies before streaming the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Protocol

import obstore
import orjson
from fastapi import APIRouter, Query, Request
from obstore.store import LocalStore, S3Store
from starlette.responses import StreamingResponse

from keel.core.errors import BadRequest, Forbidden, Gone, NotFound
from keel.core.settings import Settings
from keel.core.signing import UrlSigner, VerifyResult

META_PREFIX = ".meta"
STREAM_CHUNK = 256 * 1024


class ObjectNotFound(NotFound):
    pass


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    content_type: str


class ObjectStore(Protocol):
    async def put(
        self, key: str, data: bytes | AsyncIterable[bytes], *, content_type: str = "application/octet-stream"
    ) -> StoredObject: ...

    async def get(self, key: str) -> bytes: ...

    async def stream(self, key: str) -> tuple[StoredObject, AsyncIterator[bytes]]: ...

    async def head(self, key: str) -> StoredObject: ...

    async def delete(self, key: str) -> None: ...

    async def download_url(self, key: str, ttl_s: int) -> str:
        """A URL that serves the object until `ttl_s` seconds from now, and not after."""
        ...


def check_key(key: str) -> str:
    """Keys are relative, slash-separated names; nothing that could climb out of the store."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise BadRequest(f"invalid object key {key!r}")
    if parts[0] == META_PREFIX or any(not p.isprintable() for p in parts):
        raise BadRequest(f"invalid object key {key!r}")
    return key


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFoundError"


class ObstoreObjectStore:
    """The adapter for any obstore store. Content types ride as object attributes where the store
    supports them (S3) and in a small sidecar object where it does not (a local directory)."""

    def __init__(
        self,
        store: LocalStore | S3Store,
        *,
        signer: UrlSigner | None = None,
        files_prefix: str = "/files",
        public_base_url: str = "",
    ) -> None:
        self._store = store
        self._local = isinstance(store, LocalStore)
        self._signer = signer
        self._files_prefix = files_prefix
        self._base = public_base_url.rstrip("/")

    async def put(
        self, key: str, data: bytes | AsyncIterable[bytes], *, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        check_key(key)
        if self._local:
            await obstore.put_async(self._store, key, data)
            await obstore.put_async(
                self._store, f"{META_PREFIX}/{key}", orjson.dumps({"content_type": content_type})
            )
        else:
            await obstore.put_async(self._store, key, data, attributes={"Content-Type": content_type})
        return await self.head(key)

    async def head(self, key: str) -> StoredObject:
        check_key(key)
        try:
            meta = await obstore.head_async(self._store, key)
            content_type = await self._content_type(key)
        except Exception as exc:
            if _is_missing(exc):
                raise ObjectNotFound(f"object {key!r} not found") from None
            raise
        return StoredObject(key=key, size=int(meta["size"]), content_type=content_type)

    async def _content_type(self, key: str) -> str:
        if self._local:
            try:
                raw = await obstore.get_async(self._store, f"{META_PREFIX}/{key}")
            except Exception as exc:
                if _is_missing(exc):
                    return "application/octet-stream"
                raise
            value: str = orjson.loads(bytes(await raw.bytes_async())).get(
                "content_type", "application/octet-stream"
            )
            return value
        result = await obstore.get_async(self._store, key, options={"head": True})
        return str(result.attributes.get("Content-Type", "application/octet-stream"))

    async def get(self, key: str) -> bytes:
        _, chunks = await self.stream(key)
        return b"".join([chunk async for chunk in chunks])

    async def stream(self, key: str) -> tuple[StoredObject, AsyncIterator[bytes]]:
        info = await self.head(key)
        try:
            result = await obstore.get_async(self._store, key)
        except Exception as exc:
            if _is_missing(exc):
                raise ObjectNotFound(f"object {key!r} not found") from None
            raise

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                yield bytes(chunk)

        return info, chunks()

    async def delete(self, key: str) -> None:
        check_key(key)
        for path in [key, f"{META_PREFIX}/{key}"] if self._local else [key]:
            try:
                await obstore.delete_async(self._store, path)
            except Exception as exc:
                if not _is_missing(exc):
                    raise

    async def download_url(self, key: str, ttl_s: int) -> str:
        check_key(key)
        if isinstance(self._store, S3Store):
            url: str = await obstore.sign_async(self._store, "GET", key, timedelta(seconds=ttl_s))
            return url
        if self._signer is None:
            raise RuntimeError("a local object store needs a UrlSigner to hand out download links")
        return self._signer.sign(f"{self._files_prefix}/{key}", ttl_s).url(self._base)


def build_object_store(settings: Settings, signer: UrlSigner | None = None) -> ObstoreObjectStore:
    signer = signer or UrlSigner(settings.secret)
    if settings.s3_bucket:
        store = S3Store(
            settings.s3_bucket,
            endpoint=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True}
            if (settings.s3_endpoint_url or "").startswith("http://")
            else None,
        )
        return ObstoreObjectStore(store, signer=signer)
    root = (settings.object_store_dir or settings.data_dir / "objects").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return ObstoreObjectStore(LocalStore(root), signer=signer, public_base_url=settings.public_base_url)


def signed_files_router(prefix: str = "/files") -> APIRouter:
    """Serves local objects behind signed links: 403 on a bad signature, 410 once expired.
    The store and signer are read from `app.state` at request time (wired at start-up)."""
    router = APIRouter(prefix=prefix, tags=["files"])

    @router.get(
        "/{key:path}",
        summary="Download a stored object through a signed link",
        response_class=StreamingResponse,
        responses={403: {"description": "Bad signature"}, 410: {"description": "Link expired"}},
    )
    async def download(
        key: str,
        request: Request,
        exp: Annotated[str, Query(max_length=20)] = "",
        sig: Annotated[str, Query(max_length=64)] = "",
        kid: Annotated[str, Query(max_length=32)] = "",
    ) -> StreamingResponse:
        store: ObjectStore = request.app.state.object_store
        signer: UrlSigner = request.app.state.url_signer
        result = signer.verify(f"{prefix}/{key}", exp, sig, kid or None)
        if result is VerifyResult.EXPIRED:
            raise Gone("link expired")
        if result is not VerifyResult.OK:
            raise Forbidden("invalid link signature")
        info, chunks = await store.stream(check_key(key))
        return StreamingResponse(
            chunks,
            media_type=info.content_type,
            headers={"Content-Length": str(info.size), "Cache-Control": "private, max-age=60"},
        )

    return router


__all__ = [
    "ObjectNotFound",
    "ObjectStore",
    "ObstoreObjectStore",
    "StoredObject",
    "build_object_store",
    "check_key",
    "signed_files_router",
]
