"""Who may read an order (ORDERS_AUTH) and how many lookups a client may make, for the route and its
fast path alike (docs/security.md)."""

from __future__ import annotations

from typing import Literal

import orjson

from keel.core.ratelimit import RateLimiter


class OrderAccess:
    """`user` mode: an order is answered only to the caller whose id is its `customer_id`, and another
    customer's order answers 404 like an unknown one (a uid's existence is not told to a stranger).
    Misses (404s) count per client address against `misses`, refused (429) once over it, before any
    database read: enumeration stays slow. `per_user` counts every lookup of a user (`user` mode)."""

    def __init__(
        self,
        mode: Literal["none", "user"],
        *,
        misses: RateLimiter | None = None,
        per_user: RateLimiter | None = None,
    ) -> None:
        self.user_mode = mode == "user"
        self.misses = misses
        self.per_user = per_user

    @staticmethod
    def owns(body: bytes, user: str) -> bool:
        customer: object = orjson.loads(body).get("customer_id")
        return customer == user

    async def count_user(self, user: str) -> None:
        if self.per_user is not None:
            await self.per_user.check(user)

    async def before_lookup(self, address: str, user: str | None) -> None:
        """Ahead of a lookup the cache did not answer: 429 when the address is over its miss budget
        or the user over its lookup limit."""
        if self.misses is not None:
            await self.misses.ensure_under(address)
        if user is not None:
            await self.count_user(user)

    async def missed(self, address: str) -> None:
        """Counts a miss; the one over the budget is answered 429 instead of 404."""
        if self.misses is not None:
            await self.misses.check(address)
