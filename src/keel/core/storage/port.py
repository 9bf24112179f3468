"""The object-storage port: what services may rely on, whichever adapter is wired in."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from keel.core.errors import BadRequest, NotFound

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Adapters that cannot keep attributes keep them in sidecar objects under this name.
RESERVED_PREFIX = ".meta"
MAX_KEY_BYTES = 1024  # S3's limit, applied everywhere so a key that works locally works on S3


class ObjectNotFound(NotFound):
    pass


class InvalidObjectKey(BadRequest):
    pass


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    etag: str | None = None
    # The Content-Disposition the object is served with (an upload's original file name), if any.
    content_disposition: str | None = None


class ObjectStore(Protocol):
    async def put(
        self,
        key: str,
        data: bytes | AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        filename: str | None = None,
    ) -> StoredObject:
        """Store all of `data` under `key`, replacing what was there. If a streamed `data` raises,
        the exception propagates and nothing is stored. With `filename`, the object is served as an
        attachment under that name (keel.core.storage.disposition)."""
        ...

    async def get(self, key: str) -> bytes: ...

    async def stream(
        self, key: str, byte_range: tuple[int, int] | None = None
    ) -> tuple[StoredObject, AsyncIterator[bytes]]:
        """The object's metadata and its bytes in chunks; the size is that of the whole object.
        `byte_range` (start, end exclusive; within the object) streams those bytes only."""
        ...

    async def head(self, key: str) -> StoredObject: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""
        ...

    async def download_url(self, key: str, ttl_s: int) -> str:
        """A URL that serves the object until `ttl_s` seconds from now, and not after."""
        ...


def check_key(key: str) -> str:
    """Keys are relative, slash-separated names: nothing that could climb out of a directory, name
    a device, or collide with the reserved sidecar prefix. Raises InvalidObjectKey (400)."""
    parts = key.split("/")
    if (
        not key
        or len(key.encode()) > MAX_KEY_BYTES
        or "\\" in key  # a separator on Windows: "a\\..\\..\\b" would climb out there
        or any(part in ("", ".", "..") for part in parts)  # also catches "/abs" and "a//b"
        or not key.isprintable()  # NUL, newlines, other control characters
        or parts[0] == RESERVED_PREFIX
    ):
        raise InvalidObjectKey(f"invalid object key {key!r}")
    return key
