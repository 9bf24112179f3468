"""The unit of work on the driver connection: one transaction, kept only by `commit()`, callbacks only
after a commit that took, and its connection back in the pool clean whatever happened inside."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from keel.core.db import Database, TransactionFailed
from tests.support.eventually import eventually


@pytest_asyncio.fixture
async def db(fresh_pg_dsn: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_pg_dsn, pool_size=1)  # one connection: every test reuses it
    async with database.connection() as conn:
        await conn.execute("CREATE TABLE uow_rows (id int PRIMARY KEY)")
    yield database
    await database.dispose()


async def rows(db: Database) -> list[int]:
    async with db.connection() as conn:
        return [r[0] for r in await conn.fetch("SELECT id FROM uow_rows ORDER BY id")]


async def test_a_commit_keeps_the_writes_and_runs_the_callbacks_after_it(
    db: Database, fresh_pg_dsn: str
) -> None:
    seen: list[list[int]] = []
    async with db.unit_of_work() as uow:
        await (await uow.raw()).execute("INSERT INTO uow_rows VALUES (1), (2)")

        async def after() -> None:  # what another session sees by then
            other = await asyncpg.connect(fresh_pg_dsn)
            try:
                seen.append([r[0] for r in await other.fetch("SELECT id FROM uow_rows ORDER BY id")])
            finally:
                await other.close()

        uow.after_commit(after)
        assert seen == []
        await uow.commit()
    assert seen == [[1, 2]] and await rows(db) == [1, 2]


async def test_without_a_commit_nothing_is_kept_and_no_callback_runs(db: Database) -> None:
    called: list[str] = []
    with pytest.raises(LookupError):
        async with db.unit_of_work() as uow:
            await (await uow.raw()).execute("INSERT INTO uow_rows VALUES (1)")
            uow.after_commit(lambda: asyncio.sleep(0, called.append("after")))
            raise LookupError("the use case failed")
    async with db.unit_of_work() as uow:
        await (await uow.raw()).execute("INSERT INTO uow_rows VALUES (2)")
    assert await rows(db) == [] and called == []


async def test_committing_a_transaction_whose_statement_failed_raises_and_keeps_nothing(db: Database) -> None:
    """PostgreSQL answers such a COMMIT with ROLLBACK and no error: the unit of work says so."""
    called: list[str] = []
    with pytest.raises(TransactionFailed):
        async with db.unit_of_work() as uow:
            conn = await uow.raw()
            await conn.execute("INSERT INTO uow_rows VALUES (1)")
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO uow_rows VALUES (1)")
            uow.after_commit(lambda: asyncio.sleep(0, called.append("after")))
            await uow.commit()
    assert await rows(db) == [] and called == []


async def test_a_unit_of_work_cancelled_mid_statement_leaves_a_usable_pool(
    db: Database, fresh_pg_dsn: str
) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        async with db.unit_of_work() as uow:
            conn = await uow.raw()
            await conn.execute("INSERT INTO uow_rows VALUES (1)")
            started.set()
            await conn.execute("SELECT pg_sleep(30)")
            await uow.commit()

    async def sleeping() -> int:
        other = await asyncpg.connect(fresh_pg_dsn)  # the pool's one connection is the one sleeping
        try:
            return int(
                await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1",
                    "SELECT pg_sleep(30)",
                )
            )
        finally:
            await other.close()

    task = asyncio.create_task(slow())
    await started.wait()
    # Cancelled while the server runs the statement, not before it was sent.
    await eventually(sleeping, until=lambda n: n >= 1, timeout_s=10, what="the statement running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5), db.unit_of_work() as uow:
        await (await uow.raw()).execute("INSERT INTO uow_rows VALUES (2)")
        await uow.commit()
    assert await rows(db) == [2]
