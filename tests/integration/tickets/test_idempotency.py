"""Idempotency-Key: Redis is the fast path, PostgreSQL the truth; one key never makes two tickets."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from keel.tickets.idempotency import PENDING_TTL_S, RedisIdempotencyStore, State, redis_key
from tests.integration.tickets.conftest import ticket_body


async def _count_tickets(dsn: str, user: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM tickets WHERE created_by = $1", user))
    finally:
        await conn.close()


async def test_same_key_and_body_replays_the_first_response(client, as_user, user, fresh_pg_dsn):
    headers = as_user(**{"Idempotency-Key": "k-1"})
    first = await client.post("/v1/tickets", json=ticket_body(), headers=headers)
    again = await client.post("/v1/tickets", json=ticket_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert await _count_tickets(fresh_pg_dsn, user) == 1


async def test_same_key_with_other_body_is_422(client, as_user, user, fresh_pg_dsn):
    headers = as_user(**{"Idempotency-Key": "k-2"})
    await client.post("/v1/tickets", json=ticket_body(), headers=headers)
    response = await client.post("/v1/tickets", json=ticket_body(title="something else"), headers=headers)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["error"]["message"]
    assert await _count_tickets(fresh_pg_dsn, user) == 1


async def test_same_key_while_the_first_is_in_flight_is_409(client, as_user, user, redis_client):
    # The first request has reserved the key (as it does before it writes) and has not finished.
    from hashlib import sha256

    from keel.core.events import dumps

    body = ticket_body()
    request_hash = sha256(dumps({"title": body["title"], "description": body["description"]})).hexdigest()
    await redis_client.set(
        redis_key(user, "k-3"), orjson.dumps({"state": "pending", "hash": request_hash}), ex=60
    )
    response = await client.post("/v1/tickets", json=body, headers=as_user(**{"Idempotency-Key": "k-3"}))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_a_create_that_died_before_its_commit_frees_its_key_within_the_pending_ttl(
    client, as_user, user, redis_client, fresh_pg_dsn
):
    from hashlib import sha256

    from keel.core.events import dumps

    body = ticket_body()
    request_hash = sha256(dumps({"title": body["title"], "description": body["description"]})).hexdigest()
    # What a process reserves before its insert; this one is killed before it commits.
    reserved = await RedisIdempotencyStore(redis_client).reserve(user, "k-died", request_hash)
    assert reserved.state is State.NEW
    ttl = await redis_client.ttl(redis_key(user, "k-died"))
    assert 0 < ttl <= PENDING_TTL_S
    headers = as_user(**{"Idempotency-Key": "k-died"})
    assert (await client.post("/v1/tickets", json=body, headers=headers)).status_code == 409
    await redis_client.delete(redis_key(user, "k-died"))  # the pending TTL has run out
    retried = await client.post("/v1/tickets", json=body, headers=headers)
    assert retried.status_code == 201
    assert await _count_tickets(fresh_pg_dsn, user) == 1


async def test_fifty_concurrent_creates_with_one_key_make_exactly_one_ticket(
    client, as_user, user, fresh_pg_dsn
):
    headers = as_user(**{"Idempotency-Key": "k-burst"})
    responses = await asyncio.gather(
        *(client.post("/v1/tickets", json=ticket_body(), headers=headers) for _ in range(50))
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}
    created_ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created_ids) == 1
    assert await _count_tickets(fresh_pg_dsn, user) == 1
    print(
        f"50 concurrent creates, one key: {statuses.count(201)} x 201, {statuses.count(409)} x 409, 1 ticket"
    )


async def test_key_evicted_from_redis_still_maps_to_the_first_ticket(
    client, as_user, user, redis_client, fresh_pg_dsn
):
    headers = as_user(**{"Idempotency-Key": "k-evicted"})
    first = await client.post("/v1/tickets", json=ticket_body(), headers=headers)
    await redis_client.delete(redis_key(user, "k-evicted"))  # what maxmemory eviction does
    again = await client.post("/v1/tickets", json=ticket_body(), headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post("/v1/tickets", json=ticket_body(title="different"), headers=headers)
    assert other.status_code == 422
    assert await _count_tickets(fresh_pg_dsn, user) == 1


async def test_idempotency_key_lives_in_redis_for_an_hour(client, as_user, user, redis_client):
    await client.post("/v1/tickets", json=ticket_body(), headers=as_user(**{"Idempotency-Key": "k-ttl"}))
    ttl = await redis_client.ttl(redis_key(user, "k-ttl"))
    assert 3500 < ttl <= 3600


async def test_keys_are_per_user(client, as_user, user):
    a = await client.post(
        "/v1/tickets", json=ticket_body(), headers=as_user(f"{user}-a", **{"Idempotency-Key": "same"})
    )
    b = await client.post(
        "/v1/tickets", json=ticket_body(), headers=as_user(f"{user}-b", **{"Idempotency-Key": "same"})
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_a_keyed_create_leaves_its_finished_record_in_redis_and_the_list_invalidated(
    client, as_user, user, redis_client
):
    await client.post("/v1/tickets", json=ticket_body(title="first"), headers=as_user())
    assert len((await client.get("/v1/tickets", headers=as_user())).json()) == 1  # cached
    headers = as_user(**{"Idempotency-Key": "k-done"})
    created = await client.post("/v1/tickets", json=ticket_body(title="second"), headers=headers)

    # Sent with the list invalidation in one pipeline: both must have landed.
    record = orjson.loads(await redis_client.get(redis_key(user, "k-done")))
    assert record["state"] == "done" and record["status"] == 201
    assert orjson.loads(record["response"]) == created.json()
    assert 0 < await redis_client.ttl(redis_key(user, "k-done")) <= 3600
    listed = (await client.get("/v1/tickets", headers=as_user())).json()
    assert [t["title"] for t in listed] == ["second", "first"]
