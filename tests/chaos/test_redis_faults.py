"""Redis cut off on the wire (fault proxy in front of a private redis-server, the ticket service's
REDIS_URL pointing at the proxy): keyed creates take effect exactly once, a retry of the same key
answers the same ticket, lists fall back to PostgreSQL, nothing answers 5xx or hangs, /readyz names
redis while it is cut, and when the proxy passes again everything recovers in the same app, including
a list that was cached before the outage and missed its invalidations during it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from keel.tickets.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.support import servers
from tests.support.eventually import eventually
from tests.support.serving import serving_app
from tests.support.tcp_proxy import Mode, TcpProxy

CREATES = 20  # keyed creates during the fault (each retried once with its key), times the scale
CONCURRENCY = 10
# A hang guard, not a latency target: the request deadline (REQUEST_TIMEOUT_S) is 5 s.
BOUND_S = 10.0
LATENCY_S, JITTER_S = 0.4, 0.2  # above the Redis client's 0.25 s timeouts: every call times out


@pytest.fixture
def private_redis() -> Iterator[servers.ChildServer]:
    """A redis-server of this test's own, so the proxy's faults touch no one else's tests."""
    with servers.running(servers.redis_server()) as server:
        yield server


@pytest_asyncio.fixture
async def redis_proxy(private_redis: servers.ChildServer) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(private_redis.port).start()
    yield proxy
    await proxy.close()


@pytest_asyncio.fixture
async def client(
    redis_proxy: TcpProxy, fresh_pg_dsn: str, make_settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    # The rate limiter stays on (100/s per user, counters in Redis): it must fail open, not fail.
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0")
    async with serving_app([SPEC], settings) as (_, c):
        yield c


@dataclass
class Traffic:
    """Every request the test made: status codes and how long each took."""

    statuses: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    async def timed(self, call: Awaitable[httpx.Response]) -> httpx.Response:
        started = time.monotonic()
        response = await call
        self.seconds.append(time.monotonic() - started)
        self.statuses.append(response.status_code)
        return response

    @property
    def server_errors(self) -> int:
        return sum(status >= 500 for status in self.statuses)


def _body(n: int) -> dict[str, str]:
    return {"title": f"Redis fault {n}", "description": "Created while Redis was cut off."}


async def _create(client: httpx.AsyncClient, traffic: Traffic, user: str, key: str, n: int) -> str:
    response = await traffic.timed(
        client.post("/v1/tickets", json=_body(n), headers={"X-User-Id": user, "Idempotency-Key": key})
    )
    assert response.status_code == 201, (response.status_code, response.text)
    ticket_id: str = response.json()["id"]
    return ticket_id


async def _list(client: httpx.AsyncClient, traffic: Traffic, user: str) -> set[str]:
    response = await traffic.timed(
        client.get("/v1/tickets", params={"limit": 200}, headers={"X-User-Id": user})
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return {t["id"] for t in response.json()}


async def _keyed_creates(
    client: httpx.AsyncClient, traffic: Traffic, user: str, keys: list[str]
) -> dict[str, str]:
    """Each key created, then retried with the same body: both answer the same ticket."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def once(n: int, key: str) -> tuple[str, str]:
        async with gate:
            first = await _create(client, traffic, user, key, n)
            again = await _create(client, traffic, user, key, n)
        assert again == first, (key, first, again)
        return key, first

    return dict(await asyncio.gather(*(once(n, key) for n, key in enumerate(keys))))


async def _tickets_per_key(dsn: str, user: str) -> tuple[int, dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        tickets = await conn.fetchval("SELECT count(*) FROM tickets WHERE created_by = $1", user)
        rows = await conn.fetch(
            "SELECT key, ticket_id::text AS id FROM ticket_idempotency WHERE user_id = $1", user
        )
    finally:
        await conn.close()
    return int(tickets), {r["key"]: r["id"] for r in rows}


@pytest.mark.parametrize("fault", ["blackhole", "reset", "latency", "drop-response", "refuse"])
async def test_tickets_keep_their_promises_while_redis_is_cut_and_recover_after(
    client: httpx.AsyncClient, redis_proxy: TcpProxy, fresh_pg_dsn: str, fault: Mode
) -> None:
    # /readyz is kept apart: its 503 while Redis is cut is the answer wanted, not a server error.
    traffic, probes, user = Traffic(), Traffic(), f"redis-{uuid.uuid4().hex[:8]}"
    ready = await probes.timed(client.get("/readyz"))
    assert ready.status_code == 200, ready.text
    before = await _create(client, traffic, user, "before", -1)
    assert await _list(client, traffic, user) == {before}  # now cached in Redis

    # The pooled connections stay as the fault finds them: drop-response delivers what is sent on
    # them (a reply lost, not a request), refuse and reset tear them down themselves.
    redis_proxy.set_mode(fault, latency_s=LATENCY_S, jitter_s=JITTER_S)
    keys = [f"k{n}" for n in range(CREATES * chaos_scale())]
    during = await _keyed_creates(client, traffic, user, keys)
    assert await _list(client, traffic, user) == {before, *during.values()}  # from PostgreSQL
    cut = await probes.timed(client.get("/readyz"))
    assert cut.status_code == 503 and "redis" in cut.json()["error"]["message"], cut.text
    assert cut.json()["error"]["details"]["checks"]["postgres"] == "ok", cut.text

    redis_proxy.set_mode("pass")
    await eventually(
        lambda: probes.timed(client.get("/readyz")),
        until=lambda r: r.status_code == 200,
        timeout_s=30,
        what="/readyz ready again",
    )
    # The same keys once more (the fast path or PostgreSQL answers them), and new work.
    assert await _keyed_creates(client, traffic, user, keys) == during
    after = await _create(client, traffic, user, "after", len(keys))
    # The list cached before the outage missed the invalidations of every create since: none stale.
    everything = {before, *during.values(), after}
    assert await _list(client, traffic, user) == everything

    tickets, by_key = await _tickets_per_key(fresh_pg_dsn, user)
    duplicates = tickets - len(everything)
    print(
        f"\nredis {fault}: {len(traffic.statuses)} requests, 5xx {traffic.server_errors}, "
        f"duplicates {duplicates}, max latency {max(traffic.seconds) * 1000:.0f} ms; /readyz 503 "
        f"naming redis while cut ({probes.seconds[1] * 1000:.0f} ms), 200 again after"
    )
    assert traffic.server_errors == 0
    assert duplicates == 0 and by_key == {**during, "before": before, "after": after}
    assert max(traffic.seconds + probes.seconds) < BOUND_S


async def test_a_keyed_create_whose_redis_replies_were_lost_is_replayed_not_409_after(
    client: httpx.AsyncClient, redis_proxy: TcpProxy, private_redis: servers.ChildServer
) -> None:
    """The reservation reached Redis, its reply and the completion did not: the key stays "pending"
    there for its hour. A retry must still answer the ticket PostgreSQL committed (it was 409)."""
    traffic, user = Traffic(), f"redis-{uuid.uuid4().hex[:8]}"
    await _create(client, traffic, user, "warm-up", 0)  # a pooled connection for the reservation
    redis_proxy.set_mode("drop-response")
    first = await _create(client, traffic, user, "lost", 1)
    redis_proxy.set_mode("pass")
    direct = aioredis.from_url(f"redis://127.0.0.1:{private_redis.port}/0")
    try:
        stuck = await direct.get(f"idem:{user}:lost")
    finally:
        await direct.aclose()
    assert stuck is not None and b'"pending"' in stuck, stuck

    response = await traffic.timed(
        client.post("/v1/tickets", json=_body(1), headers={"X-User-Id": user, "Idempotency-Key": "lost"})
    )
    assert response.status_code == 201, response.text
    assert response.json()["id"] == first and response.headers["Idempotent-Replayed"] == "true"
