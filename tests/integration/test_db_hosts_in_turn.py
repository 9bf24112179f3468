"""A DSN that names several hosts (`host1:port1,host2:port2?target_session_attrs=read-write`, how
production.md points Keel at a primary and its standby): each host gets its own connect timeout, as
libpq's connect_timeout does, so a host that takes the connection and never answers (a primary lost
with its machine, its address still routed nowhere) costs one timeout and the next host is used.
The pool, the LISTEN connection and the start-up check all connect this way.

The silent host is a TCP proxy in blackhole mode on loopback: it accepts and forwards nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from keel.core import db_hosts
from keel.core.db import Database
from keel.core.errors import StartupError
from keel.core.infra import reach_postgres
from keel.core.outbox.wakeup import Listener
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy

TIMEOUT_S = 0.5


async def silent_proxy(dsn: str) -> TcpProxy:
    """In front of `dsn`'s server, forwarding nothing either way."""
    proxy = await TcpProxy.in_front_of(dsn).start()
    proxy.set_mode("blackhole")
    return proxy


@pytest.fixture
async def silent(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    proxy = await silent_proxy(pg_dsn)
    yield proxy
    await proxy.close()


def hosts_first(dsn: str, *ports: int) -> str:
    """`dsn` naming loopback `ports` first, then its own server, the writable one asked for."""
    parts = urlsplit(dsn)
    credentials, at, server = parts.netloc.rpartition("@")
    hosts = ",".join([*(f"127.0.0.1:{port}" for port in ports), server])
    query = "&".join(q for q in (parts.query, "target_session_attrs=read-write") if q)
    return urlunsplit(parts._replace(netloc=f"{credentials}{at}{hosts}", query=query))


async def test_asyncpg_alone_spends_its_whole_timeout_on_a_silent_first_host(
    pg_dsn: str, silent: TcpProxy
) -> None:
    # Why keel.core.db.connect exists. Should this fail, asyncpg times each host itself: use it alone.
    with pytest.raises(TimeoutError):
        await asyncpg.connect(hosts_first(pg_dsn, silent.port), timeout=TIMEOUT_S)
    assert silent.connections == 1  # it dialled the silent host and never got to the next


async def test_a_silent_first_host_costs_its_own_timeout_and_the_next_one_answers(
    pg_dsn: str, silent: TcpProxy
) -> None:
    started = time.monotonic()
    conn = await db_hosts.connect(hosts_first(pg_dsn, silent.port), timeout=TIMEOUT_S)
    try:
        assert await conn.fetchval("SELECT NOT pg_is_in_recovery()")
    finally:
        await conn.close()
    assert TIMEOUT_S <= time.monotonic() - started < 10 * TIMEOUT_S
    assert silent.connections == 1


async def test_the_pool_the_listen_connection_and_the_start_up_check_reach_the_next_host(
    pg_dsn: str, silent: TcpProxy
) -> None:
    dsn = hosts_first(pg_dsn, silent.port)
    await reach_postgres(dsn, TIMEOUT_S)
    database = Database.connect(dsn, connect_timeout_s=TIMEOUT_S)
    notified = asyncio.Event()
    wakeup = Listener(database, notified.set, connect_timeout_s=TIMEOUT_S)
    try:
        async with database.unit_of_work() as uow:
            assert await (await uow.raw()).fetchval("SELECT 1") == 1
        async with database.connection() as conn:
            assert await conn.fetchval("SELECT NOT pg_is_in_recovery()")
        await wakeup.ensure()
        assert wakeup.listening
    finally:
        await wakeup.close()
        await database.dispose()
    assert silent.connections >= 3  # each of the three dialled it first


async def test_no_host_answering_fails_with_one_line_after_each_had_its_timeout(
    pg_dsn: str, silent: TcpProxy
) -> None:
    second = await silent_proxy(pg_dsn)
    try:
        dsn = f"postgresql://keel@127.0.0.1:{silent.port},127.0.0.1:{second.port}/keel"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await db_hosts.connect(dsn, timeout=TIMEOUT_S)
        assert time.monotonic() - started >= 2 * TIMEOUT_S
        with pytest.raises(StartupError, match=r"no answer within 0\.5 s; check POSTGRES_DSN"):
            await reach_postgres(dsn, TIMEOUT_S)
        assert silent.connections == second.connections == 2
    finally:
        await second.close()


async def test_when_a_new_connection_reaches_another_host_the_old_hosts_connections_are_cut(
    pg_dsn: str,
) -> None:
    # Two addresses of one server stand for a primary and its promoted standby: what the pool does
    # depends on which host answered, not on the server behind it.
    first = await TcpProxy.in_front_of(pg_dsn).start()
    second = await TcpProxy.in_front_of(pg_dsn).start()
    database = Database.connect(hosts_first(pg_dsn, first.port, second.port), connect_timeout_s=TIMEOUT_S)
    try:
        async with database.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert (first.connections, second.connections) == (1, 0)
        first.set_mode("blackhole")  # the primary's machine is lost
        async with database.unit_of_work() as stuck:

            async def statement() -> object:
                return await (await stuck.raw()).fetchval("SELECT 2")

            hanging = asyncio.create_task(statement())  # on the pooled connection, to the lost host
            await eventually(lambda: asyncio.sleep(0, first.swallowed), until=bool, timeout_s=5)
            started = time.monotonic()
            async with database.connection() as conn:  # a new connection: the old host times out
                assert await conn.fetchval("SELECT 3") == 3
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await hanging  # cut, not left to its command timeout (30 s)
        assert time.monotonic() - started < 10 * TIMEOUT_S
        assert second.connections == 1
        first.set_mode("pass")  # back, say as a standby: new connections try the current host first
        async with database.connection() as a, database.connection() as b:
            assert await a.fetchval("SELECT 4") == await b.fetchval("SELECT 4") == 4
        assert second.connections == 2  # one more: the other came from the pool, already on it
    finally:
        await database.dispose()
        await first.close()
        await second.close()
