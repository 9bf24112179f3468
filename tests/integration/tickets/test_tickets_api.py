"""The ticket API contract of seed 002: create, get, list, close, with their errors."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from keel.tickets import repository
from tests.integration.tickets.conftest import ticket_body

PREFIXES = ["/v1/tickets", "/tickets"]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_create_returns_201_with_the_ticket(client, as_user, user, prefix):
    response = await client.post(prefix, json=ticket_body(), headers=as_user())
    assert response.status_code == 201
    ticket = response.json()
    assert ticket["status"] == "OPEN"
    assert ticket["created_by"] == user
    assert ticket["title"] == "Printer on fire"
    assert set(ticket) == {"id", "title", "description", "status", "created_by", "created_at", "updated_at"}


async def test_create_writes_one_ticket_and_one_outbox_row_in_one_transaction(
    api_client, as_user, fresh_pg_dsn
):
    response = await api_client.post(
        "/v1/tickets", json=ticket_body(), headers=as_user(**{"X-Request-Id": "req-1"})
    )
    ticket_id = response.json()["id"]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM tickets WHERE id = $1::uuid", ticket_id) == 1
        rows = await conn.fetch(
            "SELECT topic, key, event_type, payload FROM outbox_events WHERE key = $1", ticket_id
        )
    finally:
        await conn.close()
    assert len(rows) == 1
    assert rows[0]["topic"] == "tickets.events"
    assert rows[0]["event_type"] == "ticket.created"
    payload = json.loads(rows[0]["payload"])
    assert payload["ticket_id"] == ticket_id
    assert payload["title"] == "Printer on fire"
    assert payload["request_id"] == "req-1"
    assert payload["created_by"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "ab", "description": "x"}, "body.title"),
        ({"title": "   ab   ", "description": "x"}, "body.title"),  # whitespace does not count
        ({"title": "x" * 201, "description": "x"}, "body.title"),
        ({"title": "abc", "description": ""}, "body.description"),
        ({"title": "abc", "description": "   "}, "body.description"),
        ({"title": "abc", "description": "x" * 5001}, "body.description"),
        ({"title": "abc"}, "body.description"),
        ({"title": 123, "description": "x"}, "body.title"),
    ],
)
async def test_invalid_create_is_422_naming_the_field(client, as_user, body, field):
    response = await client.post("/v1/tickets", json=body, headers=as_user())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]


async def test_surrounding_whitespace_is_trimmed(client, as_user):
    response = await client.post(
        "/v1/tickets", json={"title": "  abc  ", "description": " d "}, headers=as_user()
    )
    assert response.status_code == 201
    assert response.json()["title"] == "abc"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/tickets"),
        ("GET", "/v1/tickets"),
        ("GET", "/tickets/x"),
        ("POST", "/tickets/x/close"),
        ("GET", "/v1/tickets/x/attachments"),
    ],
)
async def test_every_business_route_needs_a_user(client, method, path):
    response = await client.request(method, path, json=ticket_body())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_get_own_ticket_is_200(client, as_user):
    created = (await client.post("/v1/tickets", json=ticket_body(), headers=as_user())).json()
    response = await client.get(f"/tickets/{created['id']}", headers=as_user())
    assert response.status_code == 200
    assert response.json() == created


async def test_another_users_ticket_is_403(client, as_user, user):
    created = (await client.post("/v1/tickets", json=ticket_body(), headers=as_user())).json()
    response = await client.get(f"/v1/tickets/{created['id']}", headers=as_user(f"{user}-intruder"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("ticket_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "1"])
async def test_unknown_or_malformed_id_is_404(client, as_user, ticket_id):
    response = await client.get(f"/v1/tickets/{ticket_id}", headers=as_user())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_list_is_newest_first_and_filters_by_status(client, as_user, user):
    ids = []
    for i in range(3):
        ids.append(
            (await client.post("/v1/tickets", json=ticket_body(title=f"t-{i}"), headers=as_user())).json()[
                "id"
            ]
        )
    await client.post(f"/v1/tickets/{ids[0]}/close", headers=as_user())

    everything = (await client.get("/v1/tickets", headers=as_user())).json()
    assert [t["id"] for t in everything] == ids[::-1]
    closed = (await client.get("/v1/tickets", params={"status": "CLOSED"}, headers=as_user())).json()
    assert [t["id"] for t in closed] == [ids[0]]
    page = (await client.get("/v1/tickets", params={"limit": 1, "offset": 1}, headers=as_user())).json()
    assert [t["id"] for t in page] == [ids[1]]
    others = (await client.get("/v1/tickets", headers=as_user(f"{user}-other"))).json()
    assert others == []


@pytest.mark.parametrize(
    "params", [{"status": "PENDING"}, {"limit": 201}, {"limit": 0}, {"offset": -1}, {"limit": "ten"}]
)
async def test_invalid_list_query_is_422(client, as_user, params):
    response = await client.get("/v1/tickets", params=params, headers=as_user())
    assert response.status_code == 422


async def test_close_is_200_and_closing_again_is_200_without_a_second_event(
    api_client, as_user, fresh_pg_dsn
):
    created = (await api_client.post("/v1/tickets", json=ticket_body(), headers=as_user())).json()
    first = await api_client.post(f"/v1/tickets/{created['id']}/close", headers=as_user())
    second = await api_client.post(f"/tickets/{created['id']}/close", headers=as_user())
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "CLOSED"
    assert first.json()["updated_at"] == second.json()["updated_at"]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        closed_events = await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE key = $1 AND event_type = 'ticket.closed'",
            created["id"],
        )
    finally:
        await conn.close()
    assert closed_events == 1


async def test_closing_another_users_ticket_is_403_and_changes_nothing(client, as_user, user):
    created = (await client.post("/v1/tickets", json=ticket_body(), headers=as_user())).json()
    response = await client.post(f"/v1/tickets/{created['id']}/close", headers=as_user(f"{user}-intruder"))
    assert response.status_code == 403
    assert (await client.get(f"/v1/tickets/{created['id']}", headers=as_user())).json()["status"] == "OPEN"


async def test_concurrent_closes_emit_exactly_one_event(api_client, as_user, fresh_pg_dsn):
    created = (await api_client.post("/v1/tickets", json=ticket_body(), headers=as_user())).json()
    responses = await asyncio.gather(
        *(api_client.post(f"/v1/tickets/{created['id']}/close", headers=as_user()) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE key = $1 AND event_type = 'ticket.closed'",
            created["id"],
        )
    finally:
        await conn.close()
    assert count == 1


async def test_list_queries_are_served_by_the_seed_indexes(fresh_pg_dsn):
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        # A realistic table: 40 users x 500 tickets, a quarter closed, then fresh statistics.
        await conn.execute(
            """
            INSERT INTO tickets (id, title, description, status, created_by, created_at, updated_at)
            SELECT gen_random_uuid(), 'title ' || g, 'd', CASE WHEN g % 4 = 0 THEN 'CLOSED' ELSE 'OPEN' END,
                   'user-' || (g % 40), now() - g * interval '1 second', now()
            FROM generate_series(1, 20000) AS g
            """
        )
        await conn.execute("ANALYZE tickets")
        plan_all = "\n".join(
            r[0] for r in await conn.fetch(f"EXPLAIN {repository.LIST_ALL}", "user-7", 50, 0)
        )
        plan_status = "\n".join(
            r[0] for r in await conn.fetch(f"EXPLAIN {repository.LIST_BY_STATUS}", "user-7", 50, 0, "OPEN")
        )
    finally:
        await conn.close()
    print(plan_all, plan_status, sep="\n")
    assert "Index Scan using ix_tickets_created_by_created_at" in plan_all
    assert "Index Scan using ix_tickets_created_by_status_created_at" in plan_status
    assert "Sort" not in plan_all  # the index order is the answer's order: no sort step
    assert "Sort" not in plan_status
