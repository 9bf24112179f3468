"""AUTH_MODE=jwt: every kind of bad token is a 401 in the envelope, the JWKS is fetched again at most once
a minute however many unknown kids are tried, verified tokens are remembered no longer than their
`exp`, and a configuration that cannot work stops the start in one line. The app is Keel's app factory
with two routes (an authenticated one, an operator one), called in process; the JWKS comes from a small
HTTP server on loopback standing for the identity provider."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import APIRouter

from keel.core.app import create_app
from keel.core.errors import StartupError, Unauthorized
from keel.core.identity import Authenticated, JwtAuthenticator, Operator, build_authenticator
from keel.core.jwt_auth import Claims, JwksKeys, TokenCache
from keel.core.settings import Settings
from tests.support.servers import free_port

ISSUER, AUDIENCE = "https://id.example.test/", "keel"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {
        "sub": "alice",
        "roles": ["reader"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def rs256(payload: dict[str, Any], key: Any = RSA_KEY, kid: str | None = "k1") -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def unsigned(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, None, algorithm="none")


def hs256_with_the_public_key(payload: dict[str, Any]) -> str:
    """The HS/RS confusion attack: an HMAC signed with the bytes of the RSA public key, as a verifier
    that lets the token pick its algorithm would check it. (PyJWT refuses to sign with a PEM, so the
    token is assembled by hand.)"""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = hmac.new(PUBLIC_PEM.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def jwt_settings(**values: Any) -> Settings:
    base = {
        "auth_mode": "jwt",
        "auth_jwt_issuer": ISSUER,
        "auth_jwt_audience": AUDIENCE,
        "auth_jwt_leeway_s": 5,
    }
    return Settings.model_validate({**base, **values})


def app_client(settings: Settings, *, embedded: bool = False) -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/me")
    async def me(identity: Authenticated) -> dict[str, Any]:
        return {"user": identity.user, "roles": sorted(identity.roles)}

    @router.post("/ops")
    async def ops(identity: Operator) -> dict[str, str]:
        return {"operator": identity.user}

    app = create_app(
        title="jwt test",
        settings=settings,
        routers=[router],
        authenticator=build_authenticator(settings, embedded=embedded),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://keel")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BAD_TOKENS = {
    "expired": lambda: rs256(claims(exp=int(time.time()) - 60)),
    "not yet valid": lambda: rs256(claims(nbf=int(time.time()) + 600)),
    "wrong issuer": lambda: rs256(claims(iss="https://evil.example/")),
    "wrong audience": lambda: rs256(claims(aud="another-service")),
    "no exp": lambda: rs256(claims(exp=None)),
    "bad signature": lambda: rs256(claims(), key=OTHER_RSA_KEY),
    "alg none": lambda: unsigned(claims()),
    "HS256 with the RSA public key": lambda: hs256_with_the_public_key(claims()),
    "ES256 for an RSA key": lambda: jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "k1"}),
    "no user claim": lambda: rs256(claims(sub=None)),
    "malformed": lambda: "not.a.token",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_each_kind_of_bad_token_is_401_in_the_envelope(kind):
    async with app_client(jwt_settings(auth_jwt_public_key=PUBLIC_PEM)) as client:
        response = await client.get("/me", headers=bearer(BAD_TOKENS[kind]()))
    assert response.status_code == 401, (kind, response.text)
    error = response.json()["error"]
    assert error["code"] == "unauthorized" and error["request_id"] == response.headers["x-request-id"]
    print(f"\n{kind}: 401 {error['message']!r}")


async def test_a_good_token_names_the_user_and_roles_and_x_user_id_counts_for_nothing():
    async with app_client(jwt_settings(auth_jwt_public_key=PUBLIC_PEM), embedded=True) as client:
        good = await client.get("/me", headers=bearer(rs256(claims(roles=["reader", "operator"]))))
        header_only = await client.get("/me", headers={"X-User-Id": "alice", "X-User-Roles": "operator"})
        # Under `keel up` too: no loopback operators in jwt mode, the role comes from the token alone.
        no_role = await client.post("/ops", headers=bearer(rs256(claims())))
        operator = await client.post("/ops", headers=bearer(rs256(claims(roles="operator reader"))))
    assert good.json() == {"user": "alice", "roles": ["operator", "reader"]}
    assert header_only.status_code == 401
    assert no_role.status_code == 403 and no_role.json()["error"]["code"] == "forbidden"
    assert operator.json() == {"operator": "alice"}


async def test_an_hs256_secret_verifies_hs256_only():
    secret = "s" * 40
    async with app_client(jwt_settings(auth_jwt_secret=secret)) as client:
        good = await client.get("/me", headers=bearer(jwt.encode(claims(), secret, algorithm="HS256")))
        rs = await client.get("/me", headers=bearer(rs256(claims())))
    assert (good.status_code, rs.status_code) == (200, 401)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any], list[float]]]:
    """(url, the served document, the time of each fetch): the identity provider's JWKS endpoint."""
    document: dict[str, Any] = {"keys": [jwk(RSA_KEY, "k1")]}
    fetches: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(time.monotonic())
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", document, fetches
    finally:
        server.shutdown()
        server.server_close()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig"}


async def test_random_kids_make_at_most_one_jwks_refresh_a_minute(jwks_server):
    url, document, fetches = jwks_server
    async with app_client(jwt_settings(auth_jwt_jwks_url=url)) as client:
        first = await client.get("/me", headers=bearer(rs256(claims())))
        randoms = [
            (await client.get("/me", headers=bearer(rs256(claims(), kid=uuid.uuid4().hex)))).status_code
            for _ in range(20)
        ]
        document["keys"].append(jwk(OTHER_RSA_KEY, "k2"))  # the provider rotates in a new key
        rotated = await client.get("/me", headers=bearer(rs256(claims(), key=OTHER_RSA_KEY, kid="k2")))
    assert first.status_code == 200
    assert randoms == [401] * 20
    assert len(fetches) == 1, "fetched for the first token: no other fetch within that minute"
    assert rotated.status_code == 401, "within the minute the new kid waits for the next refresh"
    print(f"\n1 good token + 20 random kids + 1 rotated kid within a minute: {len(fetches)} JWKS fetch")


async def test_a_minute_later_unknown_kids_refresh_the_jwks_once(jwks_server):
    url, document, fetches = jwks_server
    now = [1000.0]
    keys = JwksKeys(url, clock=lambda: now[0])
    assert (await keys.key("k1")).algorithms[0] == "RS256"
    document["keys"].append(jwk(OTHER_RSA_KEY, "k2"))
    with pytest.raises(Unauthorized, match="unknown"):
        await keys.key("k2")  # fetched just now: no refresh yet
    now[0] += 61
    for _ in range(20):  # a minute later, random kids: the first one refreshes, the others wait
        with pytest.raises(Unauthorized):
            await keys.key(uuid.uuid4().hex)
    assert await keys.key("k2") is not None, "the refresh brought the rotated key"
    assert len(fetches) == 2, fetches


def test_a_verified_token_is_remembered_by_hash_never_past_its_exp():
    cache = TokenCache(ttl_s=60)
    digest = TokenCache.digest("token")
    cache.put(digest, Claims("alice", None), exp=time.time() - 1)
    assert cache.get(digest) is None, "an expired token is not cached"
    cache.put(digest, Claims("alice", None), exp=time.time() + 3600)
    assert cache.get(digest) == Claims("alice", None)
    small = TokenCache(ttl_s=60, max_entries=2)
    for n in range(3):
        small.put(TokenCache.digest(str(n)), Claims("u", None), exp=time.time() + 60)
    assert small.get(TokenCache.digest("0")) is None and small.get(TokenCache.digest("2")) is not None


async def test_a_cached_token_is_served_without_a_second_signature_check():
    settings = jwt_settings(auth_jwt_public_key=PUBLIC_PEM)
    auth = build_authenticator(settings)
    assert isinstance(auth, JwtAuthenticator)
    token = rs256(claims())
    scope = {"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]}
    assert auth.known(scope) is None, "not verified yet: fast paths leave it to the full check"
    assert (await auth.identify(scope)).user == "alice"
    known = auth.known(scope)
    assert known is not None and known.user == "alice"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({}, "needs a key source"),
        ({"auth_jwt_secret": "x" * 40, "auth_jwt_public_key": PUBLIC_PEM}, "one key source"),
        ({"auth_jwt_public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}, "not a PEM"),
        ({"auth_jwt_secret": "short"}, "at least 32 bytes"),
    ],
    ids=["no key source", "two key sources", "bad PEM", "short secret"],
)
def test_a_jwt_configuration_that_cannot_work_is_a_startup_error(values, says):
    with pytest.raises(StartupError, match=says):
        build_authenticator(Settings.model_validate({"auth_mode": "jwt", **values}))


@pytest.mark.timeout(120)
def test_keel_serve_says_what_is_missing_in_one_line_and_exits_2(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET": "identity-test-secret-value",
        "AUTH_MODE": "jwt",
        "KEEL_DATA_DIR": str(tmp_path),
        "COLUMNS": "300",
    }
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "serve", "delivery-prefetch", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert len(lines) == 1 and "AUTH_JWT_JWKS_URL" in lines[0], lines
    print(f"\n{lines[0]}")
