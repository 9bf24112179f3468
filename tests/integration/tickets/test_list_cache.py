"""List cache: served from Redis within its TTL (and from this process's recent pages for half a
second), invalidated for the user on every create and close."""

from __future__ import annotations

import time
import uuid

import asyncpg

from keel.core.cache.recent import DEFAULT_TTL_S, RecentPages
from tests.integration.tickets.conftest import serving, ticket_body
from tests.support import servers
from tests.support.eventually import eventually


async def test_second_list_is_served_from_the_cache(client, as_user, user, fresh_pg_dsn):
    await client.post("/v1/tickets", json=ticket_body(), headers=as_user())
    first = (await client.get("/v1/tickets", headers=as_user())).json()
    # A row written behind the service's back is not seen: the list came from the cache.
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO tickets (id, title, description, created_by) VALUES (gen_random_uuid(), 'sneaky', 'x', $1)",
            user,
        )
    finally:
        await conn.close()
    second = (await client.get("/v1/tickets", headers=as_user())).json()
    assert second == first
    metrics = (await client.get("/metrics")).text
    assert 'cache_requests_total{cache="tickets",result="hit"}' in metrics


async def test_create_and_close_invalidate_every_page_of_that_user(client, as_user, user):
    await client.post("/v1/tickets", json=ticket_body(title="first"), headers=as_user())
    pages = [("/v1/tickets", {}), ("/v1/tickets", {"status": "OPEN"}), ("/v1/tickets", {"limit": 1})]
    for path, params in pages:
        await client.get(path, params=params, headers=as_user())  # warm the cache

    created = (await client.post("/v1/tickets", json=ticket_body(title="second"), headers=as_user())).json()
    assert (await client.get("/v1/tickets", headers=as_user())).json()[0]["id"] == created["id"]
    assert (await client.get("/v1/tickets", params={"limit": 1}, headers=as_user())).json()[0][
        "id"
    ] == created["id"]

    await client.post(f"/v1/tickets/{created['id']}/close", headers=as_user())
    open_now = (await client.get("/v1/tickets", params={"status": "OPEN"}, headers=as_user())).json()
    assert created["id"] not in [t["id"] for t in open_now]
    closed = (await client.get("/v1/tickets", params={"status": "CLOSED"}, headers=as_user())).json()
    assert [t["id"] for t in closed] == [created["id"]]


async def test_other_users_cache_is_not_invalidated(client, as_user, user, fresh_pg_dsn):
    other = f"{user}-other"
    await client.post("/v1/tickets", json=ticket_body(), headers=as_user(other))
    before = (await client.get("/v1/tickets", headers=as_user(other))).json()
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO tickets (id, title, description, created_by) VALUES (gen_random_uuid(), 'sneaky', 'x', $1)",
            other,
        )
    finally:
        await conn.close()
    await client.post("/v1/tickets", json=ticket_body(), headers=as_user())  # a write by someone else
    assert (await client.get("/v1/tickets", headers=as_user(other))).json() == before


async def test_with_redis_stopped_creates_succeed_once_and_lists_come_from_postgres(
    fresh_pg_dsn, make_settings
):
    with servers.running(servers.redis_server()) as redis:
        settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=f"redis://127.0.0.1:{redis.port}/0")
        async with serving(settings) as (_, client):
            headers = {"X-User-Id": "redis-down-user"}
            before = await client.post("/v1/tickets", json=ticket_body(title="before"), headers=headers)
            assert before.status_code == 201
            await client.get("/v1/tickets", headers=headers)  # cached while Redis is up

            redis.stop()
            keyed = {**headers, "Idempotency-Key": "during-outage"}
            first = await client.post("/v1/tickets", json=ticket_body(title="during"), headers=keyed)
            retry = await client.post("/v1/tickets", json=ticket_body(title="during"), headers=keyed)
            listed = (await client.get("/v1/tickets", headers=headers)).json()
            ready = await client.get("/readyz")

            redis.start()
            after = await client.post("/v1/tickets", json=ticket_body(title="after"), headers=headers)

    assert first.status_code == 201
    assert retry.status_code == 201 and retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert [t["title"] for t in listed] == ["during", "before"]  # from PostgreSQL, not the stale cache
    assert ready.status_code == 503
    assert "redis" in ready.json()["error"]["message"]
    assert after.status_code == 201


async def test_over_the_rate_limit_is_429_with_retry_after(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "5/minute")
    async with serving(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)) as (_, client):
        user = f"limited-{uuid.uuid4().hex[:8]}"
        statuses = [
            (await client.get("/v1/tickets", headers={"X-User-Id": user})).status_code for _ in range(6)
        ]
        limited = await client.get("/v1/tickets", headers={"X-User-Id": user})
        other = await client.get("/v1/tickets", headers={"X-User-Id": f"{user}-other"})
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert other.status_code == 200


async def test_a_write_through_another_replica_is_listed_within_the_recent_pages_ttl(
    fresh_pg_dsn, redis_url, make_settings
):
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)
    headers = {"X-User-Id": f"replicas-{uuid.uuid4().hex[:8]}"}
    async with serving(settings) as (_, reader), serving(settings) as (_, writer):
        await writer.post("/v1/tickets", json=ticket_body(title="first"), headers=headers)
        assert len((await reader.get("/v1/tickets", headers=headers)).json()) == 1  # now cached in both tiers
        await writer.post("/v1/tickets", json=ticket_body(title="second"), headers=headers)
        began = time.monotonic()
        listed = await eventually(
            lambda: reader.get("/v1/tickets", headers=headers),
            until=lambda r: len(r.json()) == 2,
            timeout_s=10,
            what="the other replica's ticket in the list",
        )
        waited = time.monotonic() - began
        metrics = (await reader.get("/metrics")).text
    assert [t["title"] for t in listed.json()] == ["second", "first"]
    assert 'cache_requests_total{cache="tickets-pages",result="hit"}' in metrics
    print(
        f"another replica's write listed after {waited * 1000:.0f} ms (recent pages live {DEFAULT_TTL_S} s)"
    )


def test_a_page_loaded_while_its_user_wrote_is_not_kept():
    now = [0.0]
    pages = RecentPages("test-pages", ttl_s=0.5, clock=lambda: now[0])
    before_write = pages.version("u")
    pages.forget("u")  # the user's write lands while the page was being loaded
    pages.put("u", "all-50-0", b"old", before_write)
    assert pages.get("u", "all-50-0") is None

    pages.put("u", "all-50-0", b"new", pages.version("u"))
    pages.put("v", "all-50-0", b"other", pages.version("v"))
    assert pages.get("u", "all-50-0") == b"new"
    pages.forget("u")
    assert pages.get("u", "all-50-0") is None and pages.get("v", "all-50-0") == b"other"
    now[0] = 0.6
    assert pages.get("v", "all-50-0") is None  # expired
