"""The per-user attachment bytes: a running total kept by PostgreSQL through every write and delete,
filled from the stored attachments when the migration adds it, read by the quota as one row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from keel.core.schema import upgrade
from keel.tickets.repository import ATTACHMENT_USAGE
from tests.support.migrations import downgrade


@pytest_asyncio.fixture
async def conn(fresh_pg_dsn) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def _ticket(conn: asyncpg.Connection, user: str) -> str:
    ticket_id = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO tickets (id, title, description, created_by) VALUES ($1::uuid, 't', 'd', $2)",
        ticket_id,
        user,
    )
    return ticket_id


async def _attach(conn: asyncpg.Connection, ticket_id: str, user: str, *sizes: int) -> list[str]:
    rows = await conn.fetch(
        """
        INSERT INTO attachments (id, ticket_id, filename, content_type, size_bytes, sha256, storage_key, uploaded_by)
        SELECT gen_random_uuid(), $1::uuid, 'a.bin', 'application/octet-stream', s, 'x', 'k', $2
        FROM unnest($3::bigint[]) s
        RETURNING id::text
        """,
        ticket_id,
        user,
        list(sizes),
    )
    return [r[0] for r in rows]


async def _usage(conn: asyncpg.Connection) -> dict[str, int]:
    return {r["user_id"]: r["bytes"] for r in await conn.fetch("SELECT user_id, bytes FROM attachment_usage")}


async def test_the_total_follows_uploads_deletes_cascades_and_corrections(conn):
    first, second = await _ticket(conn, "olga"), await _ticket(conn, "olga")
    await _attach(conn, first, "olga", 100, 20)
    (large,) = await _attach(conn, second, "olga", 3_000)
    await _attach(conn, await _ticket(conn, "ivan"), "ivan", 7)
    assert await _usage(conn) == {"olga": 3_120, "ivan": 7}

    await conn.execute("UPDATE attachments SET size_bytes = 1_000 WHERE id = $1::uuid", large)
    assert (await _usage(conn))["olga"] == 1_120, "a corrected size moves the total by the difference"
    await conn.execute("UPDATE attachments SET uploaded_by = 'ivan' WHERE id = $1::uuid", large)
    assert await _usage(conn) == {"olga": 120, "ivan": 1_007}, "a row moved to another user moves its bytes"

    await conn.execute("DELETE FROM tickets WHERE id = $1::uuid", first)
    assert await _usage(conn) == {"olga": 0, "ivan": 1_007}, "a ticket's cascade takes its attachments' bytes"


async def test_concurrent_uploads_of_one_user_are_all_counted(fresh_pg_dsn, conn):
    ticket_id = await _ticket(conn, "olga")
    pool = await asyncpg.create_pool(fresh_pg_dsn, min_size=8, max_size=8)
    try:
        async with pool.acquire() as c:
            await _attach(c, ticket_id, "olga", 1)  # the user's row exists: the rest contend for it

        async def upload(n: int) -> None:
            async with pool.acquire() as c, c.transaction():
                await _attach(c, ticket_id, "olga", n)

        await asyncio.gather(*(upload(n) for n in range(1, 101)))
    finally:
        await pool.close()
    assert await _usage(conn) == {"olga": 1 + sum(range(1, 101))}


async def test_the_quota_reads_the_users_total_not_their_history(conn):
    # A long history: 2,000 tickets of 10 attachments each, then the quota for a new ticket.
    await conn.execute(
        """
        WITH t AS (
            INSERT INTO tickets (id, title, description, created_by)
            SELECT gen_random_uuid(), 't', 'd', 'olga' FROM generate_series(1, 2000)
            RETURNING id
        )
        INSERT INTO attachments (id, ticket_id, filename, content_type, size_bytes, sha256, storage_key, uploaded_by)
        SELECT gen_random_uuid(), t.id, 'a.bin', 'application/octet-stream', 10, 'x', 'k', 'olga'
        FROM t, generate_series(1, 10)
        """
    )
    ticket_id = await _ticket(conn, "olga")
    await _attach(conn, ticket_id, "olga", 10)
    await conn.execute("ANALYZE attachments")
    await conn.execute("ANALYZE attachment_usage")
    plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {ATTACHMENT_USAGE}", ticket_id, "olga"))
    # The statement once summed the user's rows: 20,001 here, every upload of theirs in production.
    assert "ix_attachments_uploaded_by" not in plan and "Seq Scan" not in plan, plan
    assert "pk_attachment_usage" in plan, plan
    row = await conn.fetchrow(ATTACHMENT_USAGE, ticket_id, "olga")
    assert (row["on_ticket"], row["user_bytes"]) == (1, 200_010)
    nobody = await conn.fetchrow(ATTACHMENT_USAGE, ticket_id, "nobody")
    assert nobody["user_bytes"] == 0


async def test_the_migration_fills_the_totals_from_the_attachments_already_stored(fresh_pg_dsn, conn):
    await downgrade(fresh_pg_dsn, "0080")
    ticket_id = await _ticket(conn, "olga")
    await _attach(conn, ticket_id, "olga", 5, 6)
    await _attach(conn, ticket_id, "ivan", 9)
    await upgrade(fresh_pg_dsn)
    assert await _usage(conn) == {"olga": 11, "ivan": 9}
    await _attach(conn, ticket_id, "ivan", 1)
    assert (await _usage(conn))["ivan"] == 10, "and counts on from there"
