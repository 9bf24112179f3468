"""The HTTP answer for a stored object, as a player or a download manager expects it: HEAD, a byte
range (206 with `Content-Range`, 416 when unsatisfiable), `ETag` with `If-None-Match` (304) and
`If-Range`, `Accept-Ranges: bytes`, and the object's `Content-Disposition` when it has one.

One range per request: a multi-range request gets the whole object (RFC 9110 lets a server ignore
Range), as does a Range header it cannot parse. Works on any store of the port: local files and S3
alike read only the bytes asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.core.errors import RangeNotSatisfiable
from keel.core.storage.port import ObjectStore, StoredObject

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _etag(info: StoredObject) -> str | None:
    if not info.etag:
        return None
    return f'"{info.etag.strip(chr(34))}"'


def _matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match asks (RFC 9110 13.1.2)."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive of a single-range header; None to serve the whole object (no usable
    range); RangeNotSatisfiable when it lies outside the object."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # bytes=-N: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return None  # invalid: ignored (RFC 9110 14.1.1)
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(int(match[2]), size - 1) if match[2] else size - 1


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the requested range is outside the object ({size} bytes)",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def object_response(
    request: Request, store: ObjectStore, key: str, headers: Mapping[str, str] = {}
) -> Response:
    """The object under `key` for a GET or HEAD `request`, with `headers` added to every answer."""
    method = request.method
    wanted = request.headers.get("range") if method == "GET" else None
    if_none_match = request.headers.get("if-none-match")
    if method == "GET" and wanted is None and if_none_match is None:
        info, chunks = await store.stream(key)  # the common case: one round trip
        return StreamingResponse(chunks, media_type=info.content_type, headers=_headers(info, headers))
    info = await store.head(key)
    common = _headers(info, headers)
    etag = _etag(info)
    if if_none_match is not None and etag is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers={k: v for k, v in common.items() if k != "Content-Length"})
    if method == "HEAD":
        return Response(media_type=info.content_type, headers=common)
    if_range = request.headers.get("if-range")
    span = byte_range(wanted, info.size) if wanted is not None and if_range in (None, etag) else None
    if span is None:
        info, chunks = await store.stream(key)
        return StreamingResponse(chunks, media_type=info.content_type, headers=_headers(info, headers))
    first, last = span
    _, chunks = await store.stream(key, (first, last + 1))
    return StreamingResponse(
        chunks,
        status_code=206,
        media_type=info.content_type,
        headers={
            **common,
            "Content-Length": str(last - first + 1),
            "Content-Range": f"bytes {first}-{last}/{info.size}",
        },
    )


def _headers(info: StoredObject, extra: Mapping[str, str]) -> dict[str, str]:
    out = {"Content-Length": str(info.size), "Accept-Ranges": "bytes", **extra}
    etag = _etag(info)
    if etag is not None:
        out["ETag"] = etag
    if info.content_disposition is not None:
        out["Content-Disposition"] = info.content_disposition
    return out
