"""Signed links at the HTTP edge: verify, map the result to 403/410, and stop a client that keeps failing.

Every verification is counted by result in `link_verifications_total` (keel.core.signing). Failed ones
(bad or malformed signature, or an expiry further ahead than any link's TTL) also count against the client address's budget, `LINK_FAILURE_LIMIT`
(default 30/minute); a client over it gets 429 with Retry-After before anything is verified, so
guessing a 48-bit signature stays hopeless (docs/cdn-signed-links.md). Expired links do not count:
they were genuinely issued, and their owner is not guessing.

The budget lives in this process (a `limits` memory store): with R replicas a client gets R budgets,
which changes the guessing arithmetic by a factor R, not its conclusion, and keeps Redis off this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from keel.core.errors import Forbidden, Gone
from keel.core.ratelimit import RateLimiter, address_of, memory_storage
from keel.core.signing import UrlSigner, VerifyResult

DEFAULT_FAILURE_LIMIT = "30/minute"


@dataclass(frozen=True, slots=True)
class LinkGuard:
    """One request's check: the process's failure limiter (None = off) and the calling client."""

    failures: RateLimiter | None
    client: str

    async def verify(self, signer: UrlSigner, path: str, exp: str, sig: str, kid: str | None) -> None:
        """Returns when the link is good; raises 429 (over the failure budget), 403 or 410."""
        if self.failures is not None:
            await self.failures.ensure_under(self.client)
        result = signer.verify(path, exp, sig, kid)
        if result is VerifyResult.OK:
            return
        if result is VerifyResult.EXPIRED:
            raise Gone("this link has expired")
        if self.failures is not None:
            await self.failures.check(self.client)  # this failure may be the one over the limit: 429
        if result is VerifyResult.EXPIRY_TOO_FAR:
            raise Forbidden("link expiry is beyond the longest link lifetime")
        raise Forbidden("invalid link signature")


def failure_limiter(state: Any) -> RateLimiter | None:
    """The app's limiter, built on first use from the settings the runtime put on `app.state.infra`
    (apps built without the runtime get the default limit)."""
    limiter: RateLimiter | None
    if hasattr(state, "link_failure_limiter"):
        limiter = state.link_failure_limiter
        return limiter
    infra = getattr(state, "infra", None)
    limit = infra.settings.link_failure_limit if infra is not None else DEFAULT_FAILURE_LIMIT
    limiter = RateLimiter(limit, memory_storage(), name="signed-links", key=address_of) if limit else None
    state.link_failure_limiter = limiter
    return limiter


async def link_guard(request: Request) -> LinkGuard:
    """FastAPI dependency for routes that serve signed links."""
    return LinkGuard(failure_limiter(request.app.state), address_of(request))
