"""Bearer tokens verified with PyJWT (AUTH_MODE=jwt): one key source, algorithms pinned per key type,
JWKS fetched on demand with a refresh budget, verified tokens remembered briefly by their hash."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from keel.core.errors import DependencyUnavailable, StartupError, Unauthorized

log = logging.getLogger("keel.identity")

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}
# RFC 7518 3.2: an HMAC key at least as long as the hash.
MIN_SECRET_BYTES = 32
# An unknown `kid` may make Keel fetch the JWKS again at most this often: random kids cannot make it
# fetch per request. Known keys are fetched again after JWKS_MAX_AGE_S (revoked keys drop out).
JWKS_REFRESH_INTERVAL_S = 60.0
JWKS_RETRY_EMPTY_S = 5.0
JWKS_MAX_AGE_S = 3600.0
JWKS_TIMEOUT_S = 3.0
TOKEN_CACHE_ENTRIES = 10_000


class Claims(NamedTuple):
    """What a verified token says about its caller."""

    user: Any
    roles: Any


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: Any  # a cryptography public key, or the HMAC secret's bytes
    algorithms: tuple[str, ...]  # what a token signed with this key may declare: nothing else


def algorithms_for(key: Any) -> tuple[str, ...]:
    """The algorithms a key's type allows: an RSA key never verifies an HS256 token (HS/RS confusion)."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_ALGORITHMS.get(key.curve.name, ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    return ()


def pem_key(pem: str) -> VerificationKey:
    try:
        # Environment files often carry the PEM on one line with literal `\n`.
        key = load_pem_public_key(pem.replace("\\n", "\n").encode())
    except ValueError:
        raise StartupError(
            "AUTH_JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----)"
        ) from None
    algorithms = algorithms_for(key)
    if not algorithms:
        raise StartupError("AUTH_JWT_PUBLIC_KEY: use an RSA, EC (P-256/384/521) or Ed25519/Ed448 key")
    return VerificationKey(key, algorithms)


def secret_key(secret: str) -> VerificationKey:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise StartupError(f"AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (HS256)")
    return VerificationKey(secret.encode(), ("HS256",))


class JwksKeys:
    """The keys of a JWKS URL by `kid`, fetched on first use, again after JWKS_MAX_AGE_S, and when a
    token names an unknown kid — at most once per `refresh_interval_s`, however many kids are tried."""

    def __init__(
        self,
        url: str,
        *,
        refresh_interval_s: float = JWKS_REFRESH_INTERVAL_S,
        max_age_s: float = JWKS_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval_s = refresh_interval_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> VerificationKey:
        if self._fetched_at is None or self._clock() - self._fetched_at > self.max_age_s:
            await self._refresh()
        found = self._find(kid)
        if found is None:
            # Through the lock even when the budget is spent: a fetch under way (a cold start, another
            # miss) may bring this kid, so wait for it; a new fetch only when the budget allows.
            await self._refresh()
            found = self._find(kid)
        if found is None and not self._keys:  # the fetch this caller waited for failed
            raise DependencyUnavailable("the token signing keys could not be fetched")
        if found is None:
            raise Unauthorized("the token's signing key (kid) is unknown")
        return found

    def _find(self, kid: str | None) -> VerificationKey | None:
        if kid is None:  # a token without kid: only a set of one key says which
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _may_refresh(self) -> bool:
        if self._fetched_at is None:
            return True
        wait = self.refresh_interval_s if self._keys else min(self.refresh_interval_s, JWKS_RETRY_EMPTY_S)
        return self._clock() - self._fetched_at >= wait

    async def _refresh(self) -> None:
        async with self._lock:  # concurrent misses wait for one fetch
            if self._fetched_at is not None and not self._may_refresh():
                return
            self._fetched_at = self._clock()
            try:
                async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_S) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                    keyset = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                log.warning("JWKS fetch from AUTH_JWT_JWKS_URL failed: %s", exc)
                if not self._keys:
                    raise DependencyUnavailable("the token signing keys could not be fetched") from None
                return
            keys = {}
            for jwk in keyset.keys:
                algorithms = algorithms_for(jwk.key)  # symmetric (`oct`) keys from a URL: never
                if algorithms:
                    keys[jwk.key_id or ""] = VerificationKey(jwk.key, algorithms)
            self._keys = keys
            log.info("JWKS fetched: %d keys", len(keys))


class TokenCache:
    """Verified tokens by SHA-256 → (claims, until): bounded, each entry dropped at its token's `exp`
    at the latest, so a hot path pays one hash and a dict lookup instead of a signature check."""

    def __init__(self, ttl_s: float, max_entries: int = TOKEN_CACHE_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[Claims, float]] = {}

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("latin-1")).digest()

    def get(self, digest: bytes) -> Claims | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if time.time() >= entry[1]:
            del self._entries[digest]
            return None
        return entry[0]

    def put(self, digest: bytes, claims: Claims, exp: float) -> None:
        until = min(exp, time.time() + self.ttl_s)
        if self.ttl_s <= 0 or until <= time.time():
            return
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest insertion
        self._entries[digest] = (claims, until)


class JwtVerifier:
    """Verifies a bearer token against the configured key source, issuer, audience and leeway; `exp`
    is required (an unbounded token could not be cached safely, nor revoked by waiting)."""

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        public_key: str | None = None,
        secret: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
        user_claim: str = "sub",
        roles_claim: str = "roles",
        cache_s: float = 60.0,
    ) -> None:
        given = [
            name
            for name, value in (
                ("AUTH_JWT_JWKS_URL", jwks_url),
                ("AUTH_JWT_PUBLIC_KEY", public_key),
                ("AUTH_JWT_SECRET", secret),
            )
            if value
        ]
        if not given:
            raise StartupError(
                "AUTH_MODE=jwt needs a key source: set AUTH_JWT_JWKS_URL, AUTH_JWT_PUBLIC_KEY or AUTH_JWT_SECRET"
            )
        if len(given) > 1:
            raise StartupError(f"AUTH_MODE=jwt takes one key source, got {' and '.join(given)}: keep one")
        self.jwks = JwksKeys(jwks_url) if jwks_url else None
        self._static = pem_key(public_key) if public_key else secret_key(secret) if secret else None
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.user_path = user_claim.split(".")
        self.roles_path = roles_claim.split(".")
        self.cache = TokenCache(cache_s)

    def cached(self, token: str) -> Claims | None:
        return self.cache.get(TokenCache.digest(token))

    async def verify(self, token: str) -> Claims:
        digest = TokenCache.digest(token)
        hit = self.cache.get(digest)
        if hit is not None:
            return hit
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is malformed") from None
        kid = header.get("kid")
        key = self._static or await self._jwks_key(kid if isinstance(kid, str) else None)
        if header.get("alg") not in key.algorithms:
            raise Unauthorized(
                f"the token's algorithm is not accepted (expected {', '.join(key.algorithms)})"
            )
        claims = self._decode(token, key)
        found = Claims(_claim(claims, self.user_path), _claim(claims, self.roles_path))
        self.cache.put(digest, found, float(claims["exp"]))
        return found

    async def _jwks_key(self, kid: str | None) -> VerificationKey:
        assert self.jwks is not None
        return await self.jwks.key(kid)

    def _decode(self, token: str, key: VerificationKey) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_s,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token's issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token's audience is not accepted") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the bearer token is invalid: {exc}") from None
        return claims


def _claim(claims: dict[str, Any], path: list[str]) -> Any:
    """A claim by dotted path (`realm_access.roles`), None when absent."""
    value: Any = claims
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
