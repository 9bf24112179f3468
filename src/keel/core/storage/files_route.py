"""The route that serves objects behind our own signed links, for stores that cannot presign."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from keel.core.app import error_responses
from keel.core.link_guard import LinkGuard, link_guard
from keel.core.signing import UrlSigner
from keel.core.storage.object_response import object_response
from keel.core.storage.port import ObjectStore

# Objects are user uploads served from our own origin: never let a browser sniff one into HTML,
# and run any HTML it does render in a sandbox (no scripts, opaque origin) — no stored XSS.
SAFE_FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
FILE_HEADERS = {"Cache-Control": "private, max-age=60", **SAFE_FILE_HEADERS}


def signed_files_router(
    store: ObjectStore | None = None, signer: UrlSigner | None = None, *, prefix: str = "/files"
) -> APIRouter:
    """GET (or HEAD) `{prefix}/{key}?exp=&kid=&sig=` streams the object, or the byte range asked for
    (keel.core.storage.object_response): 403 on a bad or malformed signature,
    410 once expired, 404 when a validly signed object is gone, 429 for a client over its budget of
    failed checks (keel.core.link_guard).

    Without `store`/`signer`, they are read from `app.state.object_store` / `app.state.url_signer`
    at request time: the runtime builds them in its lifespan, after the routes exist."""
    prefix = "/" + prefix.strip("/")
    router = APIRouter(prefix=prefix, tags=["files"])

    @router.get(
        "/{key:path}",
        summary="Download a stored object through a signed link (HEAD, Range, ETag)",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "The object's bytes"},
            206: {"description": "The byte range asked for with `Range` (`Content-Range` says which)"},
            304: {"description": "`If-None-Match` names the object's current ETag"},
            **error_responses(400),
            403: {**error_responses(403)[403], "description": "Bad, malformed or missing signature"},
            **error_responses(404),
            410: {**error_responses(410)[410], "description": "The link has expired"},
            429: {**error_responses(429)[429], "description": "Too many failed link checks from this client"},
            **error_responses(416),
        },
    )
    async def download(
        key: str,
        request: Request,
        guard: Annotated[LinkGuard, Depends(link_guard)],
        exp: str = "",
        sig: str = "",
        kid: str = "",
    ) -> Response:
        # No length limits on the query parameters: anything that does not verify is a 403, not
        # a 422, and verify() rejects a wrong-length signature before computing any HMAC.
        url_signer: UrlSigner = signer or request.app.state.url_signer
        await guard.verify(url_signer, f"{prefix}/{key}", exp, sig, kid or None)
        object_store: ObjectStore = store or request.app.state.object_store
        # The store checks the key: a signed bad key is still 400.
        return await object_response(request, object_store, key, FILE_HEADERS)

    # HEAD answers as GET without the body (players and download managers ask it first); one
    # operation in the OpenAPI document, which describes GET.
    router.add_api_route("/{key:path}", download, methods=["HEAD"], include_in_schema=False)

    return router
