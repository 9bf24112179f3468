"""Who is calling, resolved once per request by one `Authenticator` built from AUTH_MODE at start-up,
for FastAPI routes (the dependencies below) and fast paths (raw ASGI scope) alike; and the per-route
rules declared with it: `Authenticated`, `RequireRole("operator")` (docs/security.md, "Who may call what").

- `header`: `X-User-Id` names the user (the seeds' convention); `X-User-Roles` (comma-separated) is
  believed only from a TCP peer in TRUSTED_PROXIES, the gateway that sets it. Under `keel up` a
  loopback caller of an operator route counts as an operator (a dev convenience, like the dev door).
- `jwt`: `Authorization: Bearer <token>`, verified (keel.core.jwt_auth); user and roles come from its
  claims only, under `keel up` too.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.types import Scope

from keel.core.addresses import is_loopback
from keel.core.errors import Forbidden, Unauthorized
from keel.core.jwt_auth import Claims, JwtVerifier
from keel.core.settings import IPNetwork, Settings

log = logging.getLogger("keel.identity")

MAX_USER_ID_LENGTH = 128
OPERATOR = "operator"
# The scope key holding the TCP peer, recorded before a trusted proxy's X-Forwarded-For replaces
# `client` (keel.core.http_server); absent when no proxy is trusted, and then `client` is the peer.
PEER = "keel.peer"
NO_ROLES: frozenset[str] = frozenset()


class Identity(NamedTuple):
    """The caller: a user id and the roles granted to it. (A NamedTuple: built on every request.)"""

    user: str
    roles: frozenset[str] = NO_ROLES

    def has(self, role: str) -> bool:
        return role in self.roles


def valid_user(value: str, source: str) -> str:
    user = value.strip()
    if not user:
        raise Unauthorized(f"{source} is required")
    if len(user) > MAX_USER_ID_LENGTH or not user.isprintable():
        raise Unauthorized(f"{source} must be 1..{MAX_USER_ID_LENGTH} printable characters")
    return user


def parse_roles(value: Any) -> frozenset[str]:
    """Roles from a header or a claim: a list of names, or one string separated by commas or spaces."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple):
        return NO_ROLES
    return frozenset(r.strip() for r in value if isinstance(r, str) and r.strip())


def is_loopback_client(scope: Scope) -> bool:
    client = scope.get("client")
    return client is not None and is_loopback(client[0])


class Authenticator:
    """Resolves the caller of a request from its ASGI scope (headers, client, peer)."""

    mode = "none"
    # `keel up` in header mode: loopback callers of operator routes are operators.
    loopback_operators = False

    async def identify(self, scope: Scope) -> Identity:
        """The caller, or Unauthorized (401)."""
        raise NotImplementedError

    def known(self, scope: Scope) -> Identity | None:
        """The caller when it can be told without awaiting (header mode; a token already verified),
        else None: for fast paths that answer from memory and leave anything else to `identify`."""
        raise NotImplementedError


class HeaderAuthenticator(Authenticator):
    mode = "header"

    def __init__(
        self, trusted_proxies: Sequence[IPNetwork] = (), *, loopback_operators: bool = False
    ) -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.loopback_operators = loopback_operators

    async def identify(self, scope: Scope) -> Identity:
        return self._identify(scope)

    def known(self, scope: Scope) -> Identity | None:
        try:
            return self._identify(scope)
        except Unauthorized:
            return None

    def _identify(self, scope: Scope) -> Identity:
        user = roles = None
        for name, value in scope["headers"]:
            if name == b"x-user-id":
                user = value if user is None else user
            elif name == b"x-user-roles":
                roles = value if roles is None else roles
        if user is None:
            raise Unauthorized("X-User-Id header is required")
        uid = valid_user(user.decode("latin-1"), "X-User-Id")
        if roles is None or not self.from_trusted_proxy(scope):
            return Identity(uid)
        return Identity(uid, parse_roles(roles.decode("latin-1")))

    def from_trusted_proxy(self, scope: Scope) -> bool:
        peer = scope.get(PEER) or scope.get("client")
        if not self.trusted_proxies or peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


class JwtAuthenticator(Authenticator):
    mode = "jwt"

    def __init__(self, verifier: JwtVerifier) -> None:
        self.verifier = verifier

    async def identify(self, scope: Scope) -> Identity:
        return _identity(await self.verifier.verify(_bearer(scope)))

    def known(self, scope: Scope) -> Identity | None:
        try:
            claims = self.verifier.cached(_bearer(scope))
            return None if claims is None else _identity(claims)
        except Unauthorized:
            return None


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthorized("an Authorization: Bearer token is required")


def _identity(claims: Claims) -> Identity:
    if not isinstance(claims.user, str):
        raise Unauthorized("the token names no user (AUTH_JWT_USER_CLAIM)")
    return Identity(valid_user(claims.user, "the token's user claim"), parse_roles(claims.roles))


def build_authenticator(settings: Settings, *, embedded: bool = False) -> Authenticator:
    """From the settings, once per process; a jwt configuration that cannot work is a StartupError."""
    if settings.auth_mode == "jwt":
        verifier = JwtVerifier(
            jwks_url=settings.auth_jwt_jwks_url,
            public_key=settings.auth_jwt_public_key,
            secret=settings.auth_jwt_secret,
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            leeway_s=settings.auth_jwt_leeway_s,
            user_claim=settings.auth_jwt_user_claim,
            roles_claim=settings.auth_jwt_roles_claim,
            cache_s=settings.auth_jwt_cache_s,
        )
        if not (settings.auth_jwt_issuer and settings.auth_jwt_audience):
            log.warning(
                "AUTH_MODE=jwt without AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE: a token the key signed "
                "for any issuer or audience is accepted"
            )
        return JwtAuthenticator(verifier)
    return HeaderAuthenticator(settings.trusted_proxies, loopback_operators=embedded)


# --- FastAPI dependencies ------------------------------------------------------------------------

# Declared as an API-key scheme so the OpenAPI document (and schemathesis) knows the header is needed.
_user_header = APIKeyHeader(name="X-User-Id", auto_error=False, description="Caller's user id")


def authenticator_of(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


async def current_identity(request: Request, _: Annotated[str | None, Depends(_user_header)]) -> Identity:
    return await authenticator_of(request).identify(request.scope)


Authenticated = Annotated[Identity, Depends(current_identity)]


class RequireRole:
    """A route dependency: the caller, when it holds `role`; 401 without a caller, 403 without the role."""

    def __init__(self, role: str) -> None:
        self.role = role

    async def __call__(self, request: Request, identity: Authenticated) -> Identity:
        if identity.has(self.role):
            return identity
        if (
            self.role == OPERATOR
            and authenticator_of(request).loopback_operators
            and is_loopback_client(request.scope)
        ):
            return Identity(identity.user, identity.roles | {OPERATOR})
        raise Forbidden(f"this route needs the role {self.role!r}")


require_operator = RequireRole(OPERATOR)
Operator = Annotated[Identity, Depends(require_operator)]
