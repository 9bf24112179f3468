"""PostgreSQL cut off on the wire (fault proxy in front of the shared server): the ticket service
answers fast with 503 in the error envelope, /readyz names postgres, and the same app recovers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from keel.core.runtime import build_app
from keel.tickets.spec import SPEC
from tests.support.eventually import eventually
from tests.support.tcp_proxy import Mode, TcpProxy

FAST_S = 3.0  # DB_CONNECT_TIMEOUT_S is 2 s; the request deadline is 5 s


@pytest_asyncio.fixture
async def pg_proxy(fresh_pg_dsn: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(fresh_pg_dsn)
    if parts.port is None:
        pytest.fail("the PostgreSQL outage suite needs a TCP server (TEST_POSTGRES_DSN), not a unix socket")
    proxy = await TcpProxy.in_front_of(fresh_pg_dsn).start()
    yield proxy
    await proxy.close()


@pytest_asyncio.fixture
async def client(
    pg_proxy: TcpProxy, fresh_pg_dsn: str, redis_url: str, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    settings = make_settings(postgres_dsn=pg_proxy.reroute(fresh_pg_dsn), redis_url=redis_url)
    app = build_app([SPEC], settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://tickets") as c,
    ):
        yield c


def _create(client: httpx.AsyncClient, user: str) -> Any:
    return client.post(
        "/v1/tickets",
        json={"title": "Printer on fire", "description": "Third floor."},
        headers={"X-User-Id": user},
    )


async def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def _outage(
    client: httpx.AsyncClient, proxy: TcpProxy, fault: Mode
) -> tuple[str, dict[str, tuple[httpx.Response, float]], httpx.Response, float]:
    """A ticket made while up, then a restart as the client sees it (the open connections die,
    then the server is gone: RST or silence), and a create, a get and /readyz during it."""
    user = f"pg-{uuid.uuid4().hex[:8]}"
    before = await _create(client, user)
    assert before.status_code == 201, before.text
    ticket_id = before.json()["id"]
    proxy.set_mode("reset")
    proxy.set_mode(fault)
    answers = {
        "create": await _timed(_create(client, user)),
        "get": await _timed(client.get(f"/v1/tickets/{ticket_id}", headers={"X-User-Id": user})),
    }
    ready, ready_s = await _timed(client.get("/readyz"))
    return user, answers, ready, ready_s


async def _recover(client: httpx.AsyncClient, proxy: TcpProxy, user: str) -> float:
    proxy.set_mode("pass")
    started = time.monotonic()
    after = await eventually(
        lambda: _create(client, user), until=lambda r: r.status_code == 201, timeout_s=10, what="a 201 again"
    )
    recovered_s = time.monotonic() - started
    assert (await client.get("/readyz")).status_code == 200
    got = await client.get(f"/v1/tickets/{after.json()['id']}", headers={"X-User-Id": user})
    assert got.status_code == 200
    return recovered_s


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
async def test_postgres_outage_fails_fast_in_the_envelope_and_recovers_without_restart(
    client: httpx.AsyncClient, pg_proxy: TcpProxy, fault: Mode
) -> None:
    user, answers, ready, ready_s = await _outage(client, pg_proxy, fault)
    for name, (response, elapsed) in answers.items():
        assert response.status_code >= 500, (name, response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"] and error["request_id"], error
        assert elapsed < FAST_S, (name, elapsed)
    assert ready.status_code == 503
    assert "postgres" in ready.json()["error"]["message"], ready.text
    recovered_s = await _recover(client, pg_proxy, user)
    figures = ", ".join(f"{n} {r.status_code} in {t * 1000:.0f} ms" for n, (r, t) in answers.items())
    print(
        f"\npostgres {fault}: {figures}, /readyz 503 naming postgres in {ready_s * 1000:.0f} ms; "
        f"201 again {recovered_s * 1000:.0f} ms after the proxy passes, same app, no restart"
    )
