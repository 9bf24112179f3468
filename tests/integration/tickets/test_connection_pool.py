"""The service keeps its PostgreSQL connections across bursts as large as its pool: no connection is
closed at check-in and opened again by the next burst (each reopen costs a connect and loses the
connection's prepared statements)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from keel.core.settings import Settings
from tests.integration.tickets.conftest import ticket_body

BURST = 32  # the default DB_POOL_SIZE: the concurrency a process expects


async def _backends(dsn: str) -> set[tuple[int, object]]:
    """(pid, backend start) of every other connection to the test's database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {(r["pid"], r["backend_start"]) for r in rows}


async def _burst(client: httpx.AsyncClient, user: str) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/tickets", json=ticket_body(), headers={"X-User-Id": user}) for _ in range(BURST))
    )
    assert {r.status_code for r in responses} == {201}


async def test_a_second_burst_reuses_every_connection_of_the_first(client, user, fresh_pg_dsn):
    assert Settings.model_fields["db_pool_size"].default == BURST
    await _burst(client, user)
    first = await _backends(fresh_pg_dsn)
    await _burst(client, user)
    second = await _backends(fresh_pg_dsn)
    assert first and first <= second, f"{len(first - second)} of {len(first)} connections were reopened"
    print(f"{BURST} concurrent creates twice: {len(first)} connections opened once and kept")
