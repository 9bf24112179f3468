"""POST /v1/tickets, case by case: what each odd request gets (status, code, replay header), with and
without a rate limit configured, at the edge (keel.core.fastpath) and from the FastAPI route — one
use case answers every way, so the answers are the same."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.tickets.conftest import serving, ticket_body

VOLATILE = {"id", "created_at", "updated_at", "request_id", "created_by"}  # two users: one per app

# (name, headers beyond the user's, JSON body or raw bytes, expected status); an empty user header
# means none is sent.
CASES: list[tuple[str, dict[str, str], Any, int]] = [
    ("keyed", {"Idempotency-Key": "k-1"}, ticket_body(), 201),
    ("replayed", {"Idempotency-Key": "k-1"}, ticket_body(), 201),
    ("same key, other body", {"Idempotency-Key": "k-1"}, ticket_body(title="another title"), 422),
    ("no key", {}, ticket_body(), 201),
    ("trimmed", {}, ticket_body(title="   padded title   "), 201),
    ("blank title", {}, ticket_body(title="   "), 422),
    ("extra field", {}, ticket_body(priority="high"), 422),
    ("not an object", {}, [1, 2], 422),
    ("key too long", {"Idempotency-Key": "k" * 201}, ticket_body(), 422),
    (
        "charset",
        {"Content-Type": "application/json; charset=utf-8"},
        b'{"title": "abc", "description": "d"}',
        201,
    ),
    ("text body", {"Content-Type": "text/plain"}, b'{"title": "abc", "description": "d"}', 422),
    ("broken JSON", {"Content-Type": "application/json"}, b'{"title": "abc",', 422),
    ("no user", {"X-User-Id": ""}, ticket_body(), 401),
]


def _normalised(response: httpx.Response) -> tuple[int, Any, list[str]]:
    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("*" if k in VOLATILE else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return response.status_code, scrub(response.json()), [k for k, _ in response.headers.multi_items()]


async def _run_cases(
    client: httpx.AsyncClient, user: str, params: dict[str, str] | None = None
) -> dict[str, Any]:
    answers = {}
    for name, extra, body, _ in CASES:
        headers = {"X-User-Id": user, **extra}
        if isinstance(body, bytes):
            response = await client.post("/v1/tickets", content=body, headers=headers, params=params)
        else:
            response = await client.post("/v1/tickets", json=body, headers=headers, params=params)
        answers[name] = _normalised(response)
    return answers


async def test_every_odd_create_gets_its_status_alike_with_and_without_a_rate_limit(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch, user
):
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    async with serving(settings) as (_, client):
        unlimited = await _run_cases(client, f"{user}-unlimited")
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "100000/second")
    async with serving(settings) as (_, client):
        limited = await _run_cases(client, f"{user}-limited")

    for name, _, _, status in CASES:
        assert unlimited[name] == limited[name], name
        assert unlimited[name][0] == status, (name, unlimited[name])
        if status >= 400:
            assert set(unlimited[name][1]["error"]) >= {"code", "message", "request_id"}, name
    assert "idempotent-replayed" in unlimited["replayed"][2]
    assert "idempotent-replayed" not in unlimited["keyed"][2]
    assert unlimited["trimmed"][1]["title"] == "padded title"


class CountingCreates:
    """The real service behind the FastAPI route, counting the creates that route makes (the edge
    holds its own reference to the service, so only the full stack goes through this)."""

    def __init__(self, service) -> None:
        self.service = service
        self.calls = 0

    async def create(self, *args, **kwargs):
        self.calls += 1
        return await self.service.create(*args, **kwargs)


async def test_every_odd_create_gets_the_same_answer_at_the_edge_and_from_the_route(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch, user
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "100000/second")
    async with serving(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)) as (app, client):
        app.state.tickets = spy = CountingCreates(app.state.tickets)
        at_edge = await _run_cases(client, f"{user}-edge")
        calls_at_edge = spy.calls
        # A query string (which the route ignores) is one thing the edge leaves to the route.
        from_route = await _run_cases(client, f"{user}-route", params={"via": "route"})

    for name, _, _, status in CASES:
        assert at_edge[name] == from_route[name], name
        assert at_edge[name][0] == status, (name, at_edge[name])
    # Every body the model takes reached the use case at the edge; from the route, the same six.
    reached_use_case = ["keyed", "replayed", "same key, other body", "no key", "trimmed", "charset"]
    assert (calls_at_edge, spy.calls) == (0, len(reached_use_case))
