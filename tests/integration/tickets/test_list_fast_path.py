"""GET /v1/tickets (the first page) answered from this process's recent pages ahead of the FastAPI
stack, with or without a rate limit: the same bytes and headers as the route, which still answers
everything else (a query, a bad user header, a page not in hand)."""

from __future__ import annotations

import httpx

from keel.tickets.schemas import TicketStatus
from tests.integration.tickets.conftest import serving, ticket_body


class CountingService:
    """The real service behind the FastAPI route, counting the list calls that route makes (the edge
    holds its own reference to the service, so only the full stack goes through this)."""

    def __init__(self, service) -> None:
        self.service = service
        self.calls = 0

    async def list_tickets(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> bytes:
        self.calls += 1
        return await self.service.list_tickets(user, status, limit, offset)

    async def create(self, *args, **kwargs):
        return await self.service.create(*args, **kwargs)


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, "" if k == "x-request-id" else v) for k, v in response.headers.multi_items()]


async def test_the_first_page_at_the_edge_is_what_the_route_answers_and_a_write_is_seen_at_once(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch, user
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    headers = {"X-User-Id": user}
    async with serving(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)) as (app, client):
        app.state.tickets = spy = CountingService(app.state.tickets)
        await client.post("/v1/tickets", json=ticket_body(title="first"), headers=headers)
        slow = await client.get("/v1/tickets", headers=headers)  # loads the page, keeps it
        fast = await client.get("/v1/tickets", headers=headers)
        legacy = await client.get("/tickets", headers=headers)
        calls_after_hits = spy.calls
        queried = await client.get("/v1/tickets", params={"limit": 50}, headers=headers)
        unauthorized = await client.get("/v1/tickets", headers={"X-User-Id": "  "})
        await client.post("/v1/tickets", json=ticket_body(title="second"), headers=headers)
        after_write = await client.get("/v1/tickets", headers=headers)

    assert calls_after_hits == 1  # the edge answered the second and the legacy-prefix read
    assert fast.status_code == slow.status_code == legacy.status_code == 200
    assert fast.content == slow.content == legacy.content == queried.content
    assert _headers(fast) == _headers(slow)
    assert len(fast.headers["x-request-id"]) == 32
    assert spy.calls == 3  # the query and the read after the write took the route
    assert unauthorized.status_code == 401
    assert [t["title"] for t in after_write.json()] == ["second", "first"]
    print(f"edge == route: {len(fast.content)} B,", [k for k, _ in _headers(fast)])


async def test_with_a_rate_limit_the_fast_list_counts_every_read_once(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch, user
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "2/minute")
    headers = {"X-User-Id": user}
    async with serving(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)) as (app, client):
        app.state.tickets = spy = CountingService(app.state.tickets)
        responses = [await client.get("/v1/tickets", headers=headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]  # the kept page never passed the limit
    assert (
        responses[2].json()["error"]["code"] == "rate_limited"
        and int(responses[2].headers["retry-after"]) >= 1
    )
    assert spy.calls == 1  # the limit did not switch the fast list off: the edge answered the rest
