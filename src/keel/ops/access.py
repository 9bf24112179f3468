"""Who may use the operator API and page: the one check every `/ops` route passes.

A caller holding the `operator` role (AUTH_MODE: a verified token's roles, or `X-User-Roles` from a
trusted proxy; keel.core.identity). Under `keel up` in header mode, a caller on this machine is an
operator even without a user header, so the page works in a browser with no gateway in front (the
documented dev convenience of docs/security.md)."""

from __future__ import annotations

from fastapi import Request

from keel.core.errors import Forbidden, Unauthorized
from keel.core.identity import OPERATOR, authenticator_of, is_loopback_client


async def require_operator(request: Request) -> str:
    """The operator's name for the audit; 401 without a caller, 403 without the role."""
    auth = authenticator_of(request)
    local_operator = auth.loopback_operators and is_loopback_client(request.scope)
    try:
        identity = await auth.identify(request.scope)
    except Unauthorized:
        if local_operator and request.client:
            return f"operator@{request.client.host}"
        raise
    if identity.has(OPERATOR) or local_operator:
        return identity.user
    raise Forbidden(f"the operator console needs the role {OPERATOR!r}")
