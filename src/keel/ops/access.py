"""Who may use the operator API and page: the one check every `/ops` route passes.

Until operator identities exist (AUTH_MODE and roles), only a caller on this machine of the embedded
platform (`keel up`) is admitted; everyone else gets 403. Rewiring access means changing this
dependency alone."""

from __future__ import annotations

import ipaddress

from fastapi import Request

from keel.core.errors import Forbidden


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def require_operator(request: Request) -> str:
    """The operator's name for the audit; raises Forbidden (403) for anyone else."""
    infra = getattr(request.app.state, "infra", None)
    host = request.client.host if request.client else None
    if infra is None or not infra.embedded:
        raise Forbidden(
            "the operator console needs an operator role; until then it is served by `keel up` only"
        )
    if not _loopback(host):
        raise Forbidden("the operator console of `keel up` answers callers on this machine only")
    return f"operator@{host}"
