"""AUTH_MODE=jwt beyond RSA (docs/security.md, README "AUTH_JWT_*"): EC and Ed25519 public keys verify
their own algorithm only, a PEM may come on one line with literal `\\n`, user and roles come from the
claims configured (a dotted path reaches into an object), a JWKS's symmetric keys are ignored,
concurrent misses wait for one JWKS fetch, the JWKS is fetched again after an hour, and a start without
issuer and audience says so. Keys and tokens are made here; the JWKS is served on loopback by the
identity-provider fixture of test_identity_jwt.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.core.errors import Unauthorized
from keel.core.identity import JwtAuthenticator, build_authenticator
from keel.core.jwt_auth import JwksKeys
from keel.core.runtime import build_app
from keel.core.settings import Settings
from tests.security import test_identity_jwt as identity_jwt
from tests.security.test_identity_jwt import (
    AUDIENCE,
    ISSUER,
    OTHER_RSA_KEY,
    RSA_KEY,
    app_client,
    bearer,
    claims,
    jwk,
    jwt_settings,
    rs256,
)
from tests.support.servers import free_port

# The loopback JWKS endpoint (url, served document, time of each fetch), shared with test_identity_jwt.
jwks_server = identity_jwt.jwks_server

EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED25519_KEY = ed25519.Ed25519PrivateKey.generate()
HMAC_SECRET = "a-shared-secret-that-is-long-enough-for-hs256"


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signed(payload: dict[str, Any], key: Any, algorithm: str, kid: str | None = None) -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def bearer_scope(token: str) -> dict[str, Any]:
    return {"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]}


# --- public keys other than RSA --------------------------------------------------------------------

# Per key type: the algorithm its tokens carry, and tokens it must refuse (another family's algorithm).
KEY_TYPES = {
    "EC P-256": (
        EC_KEY,
        "ES256",
        {
            "RS256": lambda: rs256(claims(), kid=None),
            "EdDSA": lambda: signed(claims(), ED25519_KEY, "EdDSA"),
            "HS256": lambda: signed(claims(), HMAC_SECRET, "HS256"),
        },
    ),
    "Ed25519": (
        ED25519_KEY,
        "EdDSA",
        {
            "RS256": lambda: rs256(claims(), kid=None),
            "ES256": lambda: signed(claims(), EC_KEY, "ES256"),
            "HS256": lambda: signed(claims(), HMAC_SECRET, "HS256"),
        },
    ),
}


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
async def test_an_ec_or_ed25519_public_key_verifies_its_own_algorithm_only(key_type):
    key, algorithm, others = KEY_TYPES[key_type]
    async with app_client(jwt_settings(auth_jwt_public_key=public_pem(key))) as client:
        good = await client.get("/me", headers=bearer(signed(claims(), key, algorithm)))
        forged = await client.get("/me", headers=bearer(signed(claims(), another_key_like(key), algorithm)))
        refused = {
            name: (await client.get("/me", headers=bearer(make()))).status_code
            for name, make in others.items()
        }
    assert good.status_code == 200 and good.json() == {"user": "alice", "roles": ["reader"]}, good.text
    assert forged.status_code == 401, "the same algorithm signed by another key of that type"
    assert refused == dict.fromkeys(others, 401), refused


def another_key_like(key: Any) -> Any:
    """Another private key of the same type as `key`: its signature must not verify."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


async def test_a_pem_given_on_one_line_with_literal_backslash_n_verifies(monkeypatch):
    one_line = public_pem(EC_KEY).strip().replace("\n", "\\n")
    assert "\n" not in one_line and "\\n" in one_line
    for name, value in {
        "AUTH_MODE": "jwt",
        "AUTH_JWT_PUBLIC_KEY": one_line,
        "AUTH_JWT_ISSUER": ISSUER,
        "AUTH_JWT_AUDIENCE": AUDIENCE,
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # as `keel serve` reads the environment
    assert settings.auth_jwt_public_key == one_line
    async with app_client(settings) as client:
        response = await client.get("/me", headers=bearer(signed(claims(), EC_KEY, "ES256")))
    assert response.status_code == 200 and response.json()["user"] == "alice", response.text


# --- which claims name the user and the roles ------------------------------------------------------


async def test_roles_from_a_dotted_claim_path_and_the_user_from_a_custom_claim():
    settings = jwt_settings(
        auth_jwt_public_key=public_pem(EC_KEY),
        auth_jwt_user_claim="preferred_username",
        auth_jwt_roles_claim="realm_access.roles",
    )
    keycloak_like = claims(
        sub="f3b1c2d4-uuid",
        preferred_username="olga",
        roles=["not-these"],  # the default claim counts for nothing once another is configured
        realm_access={"roles": ["operator", "reader"]},
    )
    async with app_client(settings) as client:
        me = await client.get("/me", headers=bearer(signed(keycloak_like, EC_KEY, "ES256")))
        ops = await client.post("/ops", headers=bearer(signed(keycloak_like, EC_KEY, "ES256")))
        no_user = await client.get("/me", headers=bearer(signed(claims(), EC_KEY, "ES256")))
    assert me.json() == {"user": "olga", "roles": ["operator", "reader"]}, me.text
    assert ops.json() == {"operator": "olga"}
    assert no_user.status_code == 401, "`sub` alone does not name the user when the user claim is another"


@pytest.mark.parametrize(
    ("roles_claim", "payload", "roles"),
    [
        ("scope", {"scope": "reader operator"}, ["operator", "reader"]),
        ("groups", {"groups": "reader,operator"}, ["operator", "reader"]),
        ("resource_access.keel.roles", {"resource_access": {"keel": {"roles": ["operator"]}}}, ["operator"]),
        ("realm_access.roles", {"realm_access": "operator"}, []),
        ("realm_access.roles", {"roles": ["operator"]}, []),
    ],
    ids=[
        "space-separated string",
        "comma-separated string",
        "three levels deep",
        "path through a non-object",
        "path absent",
    ],
)
async def test_a_custom_roles_claim_is_read_as_a_list_or_a_separated_string(roles_claim, payload, roles):
    settings = jwt_settings(auth_jwt_public_key=public_pem(ED25519_KEY), auth_jwt_roles_claim=roles_claim)
    token = signed(claims(**{"roles": None, **payload}), ED25519_KEY, "EdDSA")
    async with app_client(settings) as client:
        response = await client.get("/me", headers=bearer(token))
    assert response.json() == {"user": "alice", "roles": roles}, response.text


# --- JWKS ------------------------------------------------------------------------------------------


def oct_jwk(secret: str, kid: str) -> dict[str, Any]:
    return {**jwt.algorithms.HMACAlgorithm.to_jwk(secret.encode(), as_dict=True), "kid": kid}


async def test_a_jwks_serves_ec_and_ed25519_keys_and_its_symmetric_keys_are_ignored(jwks_server):
    url, document, fetches = jwks_server
    document["keys"] = [
        jwk(RSA_KEY, "rsa"),
        {**jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec"},
        {**jwt.algorithms.OKPAlgorithm.to_jwk(ED25519_KEY.public_key(), as_dict=True), "kid": "ed"},
        oct_jwk(HMAC_SECRET, "sym"),
    ]
    async with app_client(jwt_settings(auth_jwt_jwks_url=url)) as client:
        statuses = {
            kid: (await client.get("/me", headers=bearer(signed(claims(), key, algorithm, kid)))).status_code
            for kid, key, algorithm in [
                ("rsa", RSA_KEY, "RS256"),
                ("ec", EC_KEY, "ES256"),
                ("ed", ED25519_KEY, "EdDSA"),
                ("sym", HMAC_SECRET, "HS256"),
            ]
        }
    assert statuses == {"rsa": 200, "ec": 200, "ed": 200, "sym": 401}, statuses
    assert len(fetches) == 1


async def test_concurrent_first_requests_wait_for_one_jwks_fetch(jwks_server):
    url, _, fetches = jwks_server
    auth = build_authenticator(jwt_settings(auth_jwt_jwks_url=url))
    assert isinstance(auth, JwtAuthenticator)
    users = [f"user-{n}" for n in range(20)]
    # Twenty callers at a cold start: the first fetches the JWKS, the others wait for that fetch.
    answers = await asyncio.gather(
        *(auth.identify(bearer_scope(rs256(claims(sub=user), kid="k1"))) for user in users),
        return_exceptions=True,
    )
    assert [getattr(a, "user", a) for a in answers] == users
    assert len(fetches) == 1, fetches


async def test_concurrent_first_requests_all_answer_503_when_the_jwks_cannot_be_fetched():
    # Nobody listens at the JWKS URL: every caller that waited for the failed fetch is told the
    # identity provider is away (503, retry), not that its token is bad (401).
    keys = JwksKeys(f"http://127.0.0.1:{free_port()}/jwks.json")
    answers = await asyncio.gather(*(keys.key("k1") for _ in range(10)), return_exceptions=True)
    assert [type(a).__name__ for a in answers] == ["DependencyUnavailable"] * 10, answers


async def test_concurrent_unknown_kids_a_minute_later_wait_for_one_refresh(jwks_server):
    url, document, fetches = jwks_server
    now = [1000.0]
    keys = JwksKeys(url, clock=lambda: now[0])
    await keys.key("k1")
    document["keys"].append(jwk(OTHER_RSA_KEY, "k2"))  # the provider rotates in a new key
    now[0] += 61
    kids = ["k2", uuid.uuid4().hex] * 10  # the rotated kid and random ones, all at once
    answers = await asyncio.gather(*(keys.key(kid) for kid in kids), return_exceptions=True)
    assert [type(a).__name__ for a in answers] == ["VerificationKey", "Unauthorized"] * 10, answers
    assert len(fetches) == 2, "one refresh for all twenty misses"


async def test_after_an_hour_the_jwks_is_fetched_again_and_a_removed_key_stops_verifying(jwks_server):
    url, document, fetches = jwks_server
    now = [1000.0]
    keys = JwksKeys(url, clock=lambda: now[0])
    await keys.key("k1")
    document["keys"] = [jwk(OTHER_RSA_KEY, "k2")]  # the provider drops k1 (revoked)
    now[0] += 3599
    assert await keys.key("k1") is not None, "within the hour the fetched keys stand"
    assert len(fetches) == 1
    now[0] += 2
    with pytest.raises(Unauthorized, match="unknown"):
        await keys.key("k1")
    assert await keys.key("k2") is not None
    assert len(fetches) == 2, "an hour on, one fetch brought the new set"


# --- the start-up warning --------------------------------------------------------------------------


def test_a_jwt_start_without_issuer_and_audience_warns_at_start(caplog):
    pem = public_pem(ED25519_KEY)

    def warnings_at_start(**values: Any) -> list[str]:  # `keel serve delivery-prefetch`
        settings = Settings.model_validate(
            {"secret": "jwt-warning-test-secret", "auth_mode": "jwt", "auth_jwt_public_key": pem, **values}
        )
        caplog.clear()
        with caplog.at_level("WARNING", logger="keel.identity"):
            build_app([DELIVERY], settings)
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "keel.identity" and r.levelname == "WARNING" and "AUTH_JWT_ISSUER" in r.getMessage()
        ]

    neither = warnings_at_start()
    assert len(neither) == 1 and "AUTH_JWT_AUDIENCE" in neither[0], neither
    assert len(warnings_at_start(auth_jwt_issuer=ISSUER)) == 1, "an issuer alone: still warned"
    assert len(warnings_at_start(auth_jwt_audience=AUDIENCE)) == 1, "an audience alone: still warned"
    assert warnings_at_start(auth_jwt_issuer=ISSUER, auth_jwt_audience=AUDIENCE) == []
    print(f"\n{neither[0]}")
