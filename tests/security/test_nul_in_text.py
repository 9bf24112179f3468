"""A NUL character in a JSON string field answers 422 naming the field (PostgreSQL text cannot hold
U+0000), never 500. Found by schemathesis on POST /v1/tickets."""

from __future__ import annotations

import httpx
import pytest

from keel import services
from keel.core.runtime import build_app

CASES = [
    ("tickets", "/v1/tickets", {"title": "Printer\u0000 on fire", "description": "Third floor."}),
    ("tickets", "/v1/tickets", {"title": "Printer on fire", "description": "Third\u0000 floor."}),
    ("videos", "/api/videos", {"title": "Bunny\u0000", "url": "https://cdn.example.com/a.mp4"}),
]


@pytest.mark.parametrize(("name", "path", "body"), CASES)
async def test_nul_in_a_string_field_is_a_client_error_not_500(
    name: str, path: str, body: dict[str, str], fresh_pg_dsn: str, redis_url: str, make_settings, monkeypatch
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    app = build_app([services.load(name)], make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://k") as client,
    ):
        response = await client.post(path, json=body, headers={"X-User-Id": "nul-user"})
    print(f"\nPOST {path} with U+0000 in {body}: {response.status_code}")
    assert response.status_code == 422, response.text
    assert "NUL" in response.text
