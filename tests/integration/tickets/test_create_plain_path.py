"""POST /v1/tickets without a rate limit: plain requests are answered ahead of FastAPI's dependency
solving and body parsing (keel.tickets.api._plain_create), everything else by the FastAPI handler. Both
apps answer every case alike: status, body (ids and times aside) and header names."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from keel.core.auth import _user_header
from keel.tickets.api import Caller, _caller
from tests.integration.tickets.conftest import serving, ticket_body

VOLATILE = {"id", "created_at", "updated_at", "request_id", "created_by"}  # two users: one per app

# (name, headers beyond the user's, JSON body or raw bytes); a None user header means none is sent.
CASES: list[tuple[str, dict[str, str], Any]] = [
    ("keyed", {"Idempotency-Key": "k-1"}, ticket_body()),
    ("replayed", {"Idempotency-Key": "k-1"}, ticket_body()),
    ("same key, other body", {"Idempotency-Key": "k-1"}, ticket_body(title="another title")),
    ("no key", {}, ticket_body()),
    ("trimmed", {}, ticket_body(title="   padded title   ")),
    ("blank title", {}, ticket_body(title="   ")),
    ("extra field", {}, ticket_body(priority="high")),
    ("not an object", {}, [1, 2]),
    ("key too long", {"Idempotency-Key": "k" * 201}, ticket_body()),
    ("charset", {"Content-Type": "application/json; charset=utf-8"}, b'{"title": "abc", "description": "d"}'),
    ("text body", {"Content-Type": "text/plain"}, b'{"title": "abc", "description": "d"}'),
    ("broken JSON", {"Content-Type": "application/json"}, b'{"title": "abc",'),
    ("no user", {"X-User-Id": ""}, ticket_body()),
]
# What the plain path answers itself: the others fall through to FastAPI's handler.
PLAIN = {"keyed", "replayed", "same key, other body", "no key", "trimmed"}


def _normalised(response: httpx.Response) -> tuple[int, Any, list[str]]:
    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("*" if k in VOLATILE else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return response.status_code, scrub(response.json()), [k for k, _ in response.headers.multi_items()]


async def _run_cases(app: Any, client: httpx.AsyncClient, user: str) -> tuple[dict[str, Any], set[str]]:
    """Every case against `app`; also the cases that reached FastAPI's handler (its caller dependency)."""
    handled = 0
    reached = set()

    async def counted(request: Request, user_id: Annotated[str | None, Depends(_user_header)]) -> Caller:
        nonlocal handled
        handled += 1
        return await _caller(request, user_id)

    app.dependency_overrides[_caller] = counted
    answers = {}
    for name, extra, body in CASES:
        headers = {"X-User-Id": user, **extra}
        if isinstance(body, bytes):
            response = await client.post("/v1/tickets", content=body, headers=headers)
        else:
            response = await client.post("/v1/tickets", json=body, headers=headers)
        answers[name] = _normalised(response)
        if handled:
            reached.add(name)
            handled = 0
    return answers, reached


async def test_plain_creates_skip_the_handler_and_every_answer_matches_the_rate_limited_route(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch, user
):
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    async with serving(settings) as (app, client):
        plain, plain_handled = await _run_cases(app, client, f"{user}-plain")
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "100000/second")
    async with serving(settings) as (app, client):
        full, full_handled = await _run_cases(app, client, f"{user}-full")

    for name, _, _ in CASES:
        assert plain[name] == full[name], name
    assert plain["keyed"][0] == plain["replayed"][0] == 201
    assert "idempotent-replayed" in plain["replayed"][2]
    assert plain["same key, other body"][0] == 422
    assert plain["trimmed"][1]["title"] == "padded title"
    assert plain["no user"][0] == 401
    assert full_handled >= PLAIN  # on the limited app every create takes FastAPI's handler
    assert not PLAIN & plain_handled
    assert {"blank title", "extra field", "key too long", "charset", "text body"} <= plain_handled
