"""Redis under Sentinels loses its primary (kill -9) while keyed ticket creates come in: the client
asks the Sentinels for the new primary and carries on without a restart.

Creates never fail (the idempotency fast path degrades to PostgreSQL, which maps each key to one
ticket), every key makes one ticket whatever the retries, `/readyz` names redis while no primary
answers and recovers, and after the switch the list cache and the rate limit work on the new
primary."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from keel.core.errors import TooManyRequests
from keel.core.ratelimit import RateLimiter, redis_storage
from keel.core.settings import Settings
from keel.tickets.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.support.eventually import eventually
from tests.support.redis_topologies import SentinelGroup, sentinel_group
from tests.support.serving import serving_app

WRITERS = 8


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with sentinel_group() as group:
        yield group


async def _count(dsn: str, user: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM tickets WHERE created_by = $1", user))
    finally:
        await conn.close()


async def test_a_primary_killed_during_keyed_creates_is_followed_without_a_restart(
    group: SentinelGroup,
    fresh_pg_dsn: str,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")  # thousands of creates by one user
    count = 300 * chaos_scale()
    user = f"sentinel-{uuid.uuid4().hex[:8]}"
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=group.url)
    keys = [f"k-{i}" for i in range(count)]
    statuses: list[int] = []
    answered_at: list[float] = []
    ids: dict[str, str] = {}
    async with serving_app([SPEC], settings) as (_, client):
        queue: asyncio.Queue[str] = asyncio.Queue()
        for key in keys:
            queue.put_nowait(key)

        async def create(key: str) -> httpx.Response:
            body = {"title": f"ticket {key}", "description": "under a Redis failover"}
            headers = {"X-User-Id": user, "Idempotency-Key": key}
            return await client.post("/v1/tickets", json=body, headers=headers)

        async def writer() -> None:
            while not queue.empty():
                key = queue.get_nowait()
                response = await create(key)
                statuses.append(response.status_code)
                answered_at.append(time.monotonic())
                if response.status_code == 201:
                    ids[key] = response.json()["id"]

        writers = [asyncio.create_task(writer()) for _ in range(WRITERS)]
        await eventually(lambda: asyncio.sleep(0, len(ids)), until=lambda n: n >= count // 3, timeout_s=60)
        old = group.by_port(group.primary_port())
        old.kill()
        killed_at = time.monotonic()
        unready = await eventually(
            lambda: client.get("/readyz"),
            until=lambda r: r.status_code == 503,
            timeout_s=30,
            what="readiness naming the lost primary",
        )
        unready_s = time.monotonic() - killed_at
        await asyncio.gather(*writers)
        await eventually(
            lambda: asyncio.sleep(0, group.primary_port()), until=lambda p: p != old.port, timeout_s=30
        )
        promoted_s = time.monotonic() - killed_at
        ready = await eventually(
            lambda: client.get("/readyz"), until=lambda r: r.status_code == 200, timeout_s=30, what="ready"
        )
        ready_s = time.monotonic() - killed_at

        # Every key again, as a client that never saw its answer retries: the same ticket each time.
        replays = [await create(key) for key in keys]

        # The list cache on the new primary: a second read is a hit.
        await client.get("/v1/tickets", headers={"X-User-Id": user})
        await client.get("/v1/tickets", headers={"X-User-Id": user})
        metrics = (await client.get("/metrics")).text
    # The rate limit on the new primary: five allowed, the sixth refused, across two instances.
    name = f"after-failover-{uuid.uuid4().hex[:6]}"
    first, second = (
        RateLimiter("5/minute", redis_storage(group.url, timeout_s=2.0), name=name) for _ in range(2)
    )
    for limiter in (first, second, first, second, first):
        await limiter.check("caller")
    with pytest.raises(TooManyRequests):
        await second.check("caller")

    print(
        f"\nredis sentinel failover during {count} keyed creates ({WRITERS} writers): replica promoted "
        f"{promoted_s:.1f} s after the kill, /readyz back to 200 after {ready_s:.1f} s "
        f"(503 naming redis from {unready_s:.1f} s); {sum(t > killed_at for t in answered_at)} creates answered "
        f"after the kill, {sum(killed_at < t < killed_at + ready_s for t in answered_at)} before the switch; "
        f"create statuses {sorted(set(statuses))}, "
        f"tickets {await _count(fresh_pg_dsn, user)} for {count} keys"
    )
    assert statuses.count(201) == count, sorted(set(statuses))
    assert await _count(fresh_pg_dsn, user) == count
    assert [r.status_code for r in replays] == [201] * count
    assert {k: r.json()["id"] for k, r in zip(keys, replays, strict=True)} == ids
    assert "redis" in unready.json()["error"]["message"]
    assert ready.json()["status"] == "ready"
    assert 'cache_requests_total{cache="tickets",result="hit"}' in metrics
