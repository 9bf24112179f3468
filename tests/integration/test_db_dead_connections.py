"""A pooled connection the server killed (restart, failover) fails one use, then leaves the pool:
statements on the raw driver connection bypass SQLAlchemy's own disconnect detection. A check-in
cancelled while its ROLLBACK waits on a silent server still returns the connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from keel.core.db import Database
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy


@pytest_asyncio.fixture
async def one_connection(fresh_pg_dsn: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_pg_dsn, pool_size=1)
    yield database
    await database.dispose()


async def _kill_pooled_connection(db: Database, pg_server_dsn: str) -> None:
    async with db.unit_of_work() as uow:
        pid = await (await uow.raw()).fetchval("SELECT pg_backend_pid()")
    await _terminate(pid, pg_server_dsn)


async def _kill_autocommit_connection(db: Database, pg_server_dsn: str) -> None:
    """The connection `connection()` hands out (checked out of the pool apart from a unit of work)."""
    async with db.connection() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    await _terminate(pid, pg_server_dsn)


async def _terminate(pid: int, pg_server_dsn: str) -> None:
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_unit_of_work_on_a_killed_connection_fails_once_then_gets_a_live_one(
    one_connection: Database, pg_server_dsn: str
):
    await _kill_pooled_connection(one_connection, pg_server_dsn)

    with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises first
        async with one_connection.unit_of_work() as uow:
            await (await uow.raw()).fetchval("SELECT 1")

    async with one_connection.unit_of_work() as uow:
        assert await (await uow.raw()).fetchval("SELECT 1") == 1


async def test_raw_connection_of_a_unit_of_work_is_inside_its_transaction(one_connection: Database):
    async with one_connection.unit_of_work() as uow:
        conn = await uow.raw()
        assert conn.is_in_transaction()
        await conn.execute("CREATE TABLE scratch_rolled_back (id int)")
    async with one_connection.unit_of_work() as uow:
        assert await (await uow.raw()).fetchval("SELECT to_regclass('scratch_rolled_back')") is None


async def test_autocommit_connection_that_was_killed_fails_at_most_once_then_gets_a_live_one(
    one_connection: Database, pg_server_dsn: str
):
    await _kill_autocommit_connection(one_connection, pg_server_dsn)

    # The statement on the killed connection fails (whichever error the driver raises first); the dead
    # connection is dropped at check-in and the next use gets a live one.
    with contextlib.suppress(Exception):
        async with one_connection.connection() as conn:
            await conn.fetchval("SELECT 1")

    async with one_connection.connection() as conn:
        assert await conn.fetchval("SELECT 1") == 1


async def test_autocommit_connections_are_kept_and_hold_no_session_state_between_uses(
    one_connection: Database,
):
    async with one_connection.connection() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with conn.transaction():
            await conn.execute("SELECT 1")
        await conn.execute("BEGIN")  # left open by a careless user: rolled back at release
    async with one_connection.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection, kept
        assert not conn.is_in_transaction()


@pytest_asyncio.fixture
async def silenced(fresh_pg_dsn: str) -> AsyncIterator[tuple[Database, TcpProxy]]:
    """A one-connection pool whose server can be made to go silent (a proxy in between)."""
    proxy = await TcpProxy.in_front_of(fresh_pg_dsn).start()
    database = Database.connect(proxy.reroute(fresh_pg_dsn), pool_size=1)
    yield database, proxy
    await database.dispose()
    await proxy.close()


@pytest.mark.parametrize("checkout", ["unit_of_work", "connection"])
async def test_a_check_in_cancelled_while_its_rollback_waits_still_returns_the_connection(
    silenced: tuple[Database, TcpProxy], checkout: str
) -> None:
    """A deadline or a shutdown may cancel the check-in itself while its ROLLBACK waits on a server
    gone silent: the connection must leave the caller all the same, or a pool of one is spent."""
    db, proxy = silenced
    holding = asyncio.Event()

    async def open_transaction_then_leave() -> None:
        if checkout == "unit_of_work":
            async with db.unit_of_work() as uow:
                await (await uow.raw()).execute("SELECT 1")
                proxy.set_mode("blackhole")
                holding.set()
        else:
            async with db.connection() as conn:
                await conn.execute("BEGIN")
                proxy.set_mode("blackhole")
                holding.set()

    task = asyncio.create_task(open_transaction_then_leave())
    await holding.wait()
    # The check-in's ROLLBACK has reached the silent server's side of the wire, unanswered.
    await eventually(lambda: proxy.swallowed, until=bool, what="the ROLLBACK sent")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    proxy.set_mode("pass")
    async with asyncio.timeout(5), db.unit_of_work() as uow:
        assert await (await uow.raw()).fetchval("SELECT 1") == 1
