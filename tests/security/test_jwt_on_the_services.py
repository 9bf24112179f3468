"""AUTH_MODE=jwt on the real routes (docs/security.md): the five HTTP services and the operator
console served in one app as `keel serve` serves them, the signing keys fetched from a JWKS over
HTTPS (a private CA, trusted through SSL_CERT_FILE as an operator would), RS256 tokens naming the
caller. Who the caller is comes from the token alone: X-User-Id and X-User-Roles count for nothing,
on the fast paths (the tickets create and cached list, the order lookup) as on the others."""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from keel import services
from keel.core.identity import build_authenticator
from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec
from tests.security.test_access_and_limits import assert_error, customers_order, store_orders
from tests.support.serving import served

pytestmark = pytest.mark.timeout(300)

ISSUER, AUDIENCE = "https://id.example.test/", "keel"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SERVICES = ("tickets", "orders", "videos", "orchestrator", "delivery-prefetch", "console")


def token(user: str, *roles: str, key: Any = KEY) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": user, "roles": list(roles), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    signed = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    return {"Authorization": f"Bearer {signed}"}


def someone() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def jwks_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The identity provider's JWKS over HTTPS, its certificate from a CA of the test's own."""
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(ca_file))  # how a process trusts a private CA (httpx reads it)
        yield f"https://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


def jwt_settings(pg_dsn: str, jwks_url: str, data_dir: Path) -> Settings:
    return Settings.model_validate(
        {
            "postgres_dsn": pg_dsn,
            "secret": "jwt-services-test-secret",
            "data_dir": data_dir,
            "auth_mode": "jwt",
            "auth_jwt_jwks_url": jwks_url,
            "auth_jwt_issuer": ISSUER,
            "auth_jwt_audience": AUDIENCE,
        }
    )


@pytest.fixture(scope="module")
def client(pg_dsn: str, jwks_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = jwt_settings(pg_dsn, jwks_url, tmp_path_factory.mktemp("jwt"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ORDERS_AUTH", "user")
        env.setenv("TICKETS_RATE_LIMIT", "")
        specs = [build_spec(VideoSettings()) if n == "videos" else services.load(n) for n in SERVICES]
        app = build_app(specs, settings, run_workers=False)
        with served(app, settings) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield client


def test_a_ticket_is_its_token_holders_and_x_user_id_counts_for_nothing(client: httpx.Client) -> None:
    alice, bob = someone(), someone()
    created = client.post(
        "/v1/tickets",
        json={"title": "printer", "description": "jammed"},
        headers={**token(alice), "X-User-Id": bob, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert created.status_code == 201, created.text
    ticket = created.json()["id"]
    for _ in range(2):  # the second list is the cached one: the fast path asks for the token too
        assert [t["id"] for t in client.get("/v1/tickets", headers=token(alice)).json()] == [ticket]
        assert client.get("/v1/tickets", headers=token(bob)).json() == []
        assert_error(client.get("/v1/tickets", headers={"X-User-Id": alice}), 401, "unauthorized")
    assert client.get(f"/v1/tickets/{ticket}", headers=token(alice)).status_code == 200
    assert_error(
        client.get(f"/v1/tickets/{ticket}", headers={**token(bob), "X-User-Id": alice}), 403, "forbidden"
    )
    assert_error(
        client.post("/v1/tickets", json={"title": "t", "description": "d"}, headers={"X-User-Id": alice}),
        401,
        "unauthorized",
    )


def test_a_token_signed_by_another_key_is_401_on_every_service(client: httpx.Client) -> None:
    forged = token(someone(), "operator", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for path in ("/v1/tickets", "/order/any", "/api/videos/any", "/workflows/any", "/ops/dlq"):
        assert_error(client.get(path, headers=forged), 401, "unauthorized")


@pytest.fixture(scope="module")
def carols_order(pg_dsn: str, client: httpx.Client) -> str:
    order = customers_order("carol", random.Random(7))
    store_orders(pg_dsn, [order])
    return str(order["order_uid"])


def test_an_order_is_its_customers_by_the_token(client: httpx.Client, carols_order: str) -> None:
    for _ in range(2):  # the second lookup is served from the cache, on the fast path
        mine = client.get(f"/order/{carols_order}", headers=token("carol"))
        assert mine.status_code == 200 and mine.json()["customer_id"] == "carol"
    assert_error(client.get(f"/order/{carols_order}", headers={"X-User-Id": "carol"}), 401, "unauthorized")
    assert_error(
        client.get(f"/order/{carols_order}", headers={**token("dave"), "X-User-Id": "carol"}),
        404,
        "not_found",
    )


def test_a_video_is_its_creators_by_the_token(client: httpx.Client) -> None:
    owner, other = someone(), someone()
    created = client.post(
        "/api/videos",
        json={"title": "mine", "url": f"https://cdn.example.com/{uuid.uuid4()}.mp4"},
        headers=token(owner),
    )
    assert created.status_code == 201, created.text
    video = created.json()["id"]
    assert client.get(f"/api/videos/{video}", headers=token(owner)).json()["owner"] == owner
    assert_error(
        client.get(f"/api/videos/{video}", headers={**token(other), "X-User-Id": owner}), 403, "forbidden"
    )


def test_operator_routes_take_the_role_from_the_token_only(client: httpx.Client) -> None:
    assert client.get("/ops/dlq", headers=token("olga", "operator")).status_code == 200
    assert_error(
        client.get("/ops/dlq", headers={**token("mallory"), "X-User-Roles": "operator"}), 403, "forbidden"
    )
    assert_error(client.get("/ops/dlq"), 401, "unauthorized")
    restart = client.post("/workflows/no-such-route/restart?step=tts_batch", headers=token("mallory"))
    assert_error(restart, 403, "forbidden")
    assert client.get("/workflows/no-such-route", headers=token(someone())).status_code == 404


async def test_under_keel_up_in_jwt_mode_a_loopback_caller_is_no_operator_without_the_role(
    pg_dsn: str, jwks_url: str, tmp_path: Path
) -> None:
    """docs/security.md: the loopback-operator convenience of `keel up` is header mode's only."""
    settings = jwt_settings(pg_dsn, jwks_url, tmp_path)
    authenticator = build_authenticator(settings, embedded=True)
    assert not authenticator.loopback_operators
    app = build_app([services.load("console")], settings, embedded=True, run_workers=False)
    transport = httpx.ASGITransport(app, client=("127.0.0.1", 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://keel") as c,
    ):
        assert_error(await c.get("/ops/dlq"), 401, "unauthorized")
        assert_error(await c.get("/ops/dlq", headers=token("dev")), 403, "forbidden")
        assert (await c.get("/ops/dlq", headers=token("dev", "operator"))).status_code == 200
