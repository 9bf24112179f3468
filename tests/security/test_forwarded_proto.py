"""X-Forwarded-Proto is believed only from a peer in TRUSTED_PROXIES (docs/security.md, "Client addresses
behind proxies"): from a trusted proxy the scheme it forwards is the request's, in the absolute URLs the
app builds and in the framework's own redirects; from any other peer it is ignored. A small app served
as `keel serve` serves it (keel.core.http_server), over a real loopback socket."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request

from keel.core.app import create_app
from keel.core.settings import Settings
from tests.support.serving import served

pytestmark = pytest.mark.timeout(120)

FORWARDED_HTTPS = {"X-Forwarded-Proto": "https"}


def scheme_app(settings: Settings) -> Any:
    router = APIRouter()

    @router.get("/where")
    async def where(request: Request) -> dict[str, str]:
        return {"scheme": request.url.scheme, "self": str(request.url_for("where"))}

    return create_app(title="forwarded proto", settings=settings, routers=[router])


@pytest.mark.parametrize(
    ("trusted", "scheme"),
    [("127.0.0.1/32", "https"), ("", "http"), ("10.0.0.0/8", "http")],
    ids=["peer trusted", "no trusted proxy", "peer not among the trusted"],
)
def test_forwarded_proto_is_believed_from_a_trusted_peer_only(trusted, scheme):
    settings = Settings.model_validate({"trusted_proxies": trusted, "secret": "forwarded-proto-secret"})
    with served(scheme_app(settings), settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        answer = client.get("/where", headers=FORWARDED_HTTPS)
        redirect = client.get("/where/", headers=FORWARDED_HTTPS)  # the router's slash redirect
    port = url.rsplit(":", 1)[1]
    assert answer.json() == {"scheme": scheme, "self": f"{scheme}://127.0.0.1:{port}/where"}, answer.text
    assert redirect.status_code == 307
    assert redirect.headers["location"] == f"{scheme}://127.0.0.1:{port}/where"
