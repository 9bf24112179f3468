"""PostgreSQL access: the engine, the unit of work, and DSN normalisation.

Use cases speak asyncpg: inside a unit of work's transaction (`uow.raw()`), or on a pooled driver
connection in autocommit for one-statement paths (`Database.connection()`). SQLAlchemy keeps the
pool (its size, timeouts and recycling, dead connections dropped), the tables' definitions and
the migrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from keel.core.db_hosts import Hosts, connect

AfterCommit = Callable[[], Awaitable[None]]
Creator = Callable[..., Awaitable[asyncpg.Connection]]  # asyncpg.connect's signature
Pooler = Literal["none", "pgbouncer"]


def normalize_dsn(dsn: str) -> str:
    """Any of `postgres://`, `postgresql://`, `postgresql+asyncpg://` → a SQLAlchemy asyncpg URL.

    `sslmode` (libpq, as in the orders seed's PG_URL) becomes asyncpg's `ssl`. Several hosts (libpq's
    `host1:port1,host2:port2`, with `target_session_attrs=read-write` to find the primary after a
    failover) become SQLAlchemy's repeated `host=` parameters."""
    parts = urlsplit(dsn)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError(f"not a PostgreSQL DSN: scheme {parts.scheme!r}")
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.append(("ssl", value) if key == "sslmode" else (key, value))
    netloc = parts.netloc
    credentials, at, hosts = netloc.rpartition("@")
    if "," in hosts:
        netloc = credentials + at
        query = [("host", h) for h in hosts.split(",") if h] + query
    return urlunsplit(("postgresql+asyncpg", netloc, parts.path, urlencode(query), parts.fragment))


def libpq_dsn(dsn: str) -> str:
    """The same DSN in the plain form asyncpg, psql and pgbench accept (several hosts in the netloc)."""
    parts = urlsplit(normalize_dsn(dsn))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    hosts = [v for k, v in pairs if k == "host"]
    netloc = parts.netloc + ",".join(hosts) if len(hosts) > 1 else parts.netloc
    query = [
        ("sslmode", v) if k == "ssl" else (k, v) for k, v in pairs if not (k == "host" and len(hosts) > 1)
    ]
    return urlunsplit(("postgresql", netloc, parts.path, urlencode(query), parts.fragment))


def dsn_hosts(dsn: str) -> list[str]:
    """`host:port` of each server a DSN names, for messages (no credentials)."""
    hosts = urlsplit(libpq_dsn(dsn)).netloc.rpartition("@")[2]
    return [_with_port(h) for h in hosts.split(",") if h] or ["localhost:5432"]


def _with_port(host: str) -> str:
    _, colon, port = host.rpartition(":")
    return host if colon and port.isdigit() else f"{host}:5432"


def connect_args(pooler: Pooler, creator: Creator = connect) -> dict[str, Any]:
    """The driver options of every engine Keel builds: its hosts tried in turn (keel.core.db_hosts),
    and what sits between us and PostgreSQL (DB_POOLER).

    A pooler in transaction mode (PgBouncer before 1.21) hands each transaction whichever server
    connection is free, so a named prepared statement made in one transaction is missing, or is
    another client's, in the next: "prepared statement __asyncpg_stmt_N__ does not exist". With its
    cache off asyncpg uses the unnamed statement and parses it again in the same message as each
    execution (Parse, Bind, Execute, Sync), which covers SQLAlchemy's `prepare()` calls as well. The
    cost is one parse per statement on the server."""
    pooled: dict[str, Any] = {"statement_cache_size": 0} if pooler == "pgbouncer" else {}
    return {"async_creator_fn": creator, **pooled}


def _loopback_without_ssl_setting(url: str) -> bool:
    has_ssl = any(key == "ssl" for key, _ in parse_qsl(urlsplit(url).query))
    hosts = {h.rpartition(":")[0].strip("[]") for h in dsn_hosts(url)}
    return not has_ssl and hosts <= {"127.0.0.1", "localhost", "::1"}


def _terminate_if_cancelling(driver: asyncpg.Connection) -> None:
    """Close a connection whose statement was cancelled mid-flight and is still cancelling: until the
    cancel ends, every use of it fails with "another operation is in progress"."""
    if not driver.is_closed() and driver._protocol._is_cancelling():
        driver.terminate()


class Database:
    """Owns the engine (a connection pool); built at start-up and handed to whoever needs it."""

    def __init__(
        self, engine: AsyncEngine, *, listen_dsn: str | None = None, hosts: Hosts | None = None
    ) -> None:
        self.engine = engine
        # Which host each pooled connection is on (the engine's creator records it).
        self.hosts = hosts or Hosts()
        # Where LISTEN connections go (they need a session of their own); None: nowhere, poll instead.
        self.listen_dsn = listen_dsn

    @classmethod
    def connect(
        cls,
        dsn: str,
        *,
        pool_size: int = 32,
        connect_timeout_s: float = 2.0,
        pooler: Pooler = "none",
        listen_dsn: str | None = None,
    ) -> Database:
        """`listen_dsn`: a direct DSN for LISTEN; by default `dsn` itself, unless a pooler is in between
        (a LISTEN sent through a pooler in transaction mode hears nothing)."""
        url = normalize_dsn(dsn)
        hosts = Hosts()
        # Fail fast when PostgreSQL is down or restarting; the pool drops dead connections itself.
        options: dict[str, Any] = {
            "timeout": connect_timeout_s,
            "command_timeout": 30,
            **connect_args(pooler, hosts.connect),
        }
        if _loopback_without_ssl_setting(url):
            options["ssl"] = False  # asyncpg's default `prefer` tries TLS first on every connect
        engine = create_async_engine(
            url,
            # `pool_size` is the cap, opened lazily up to the peak concurrency, and no overflow: an
            # overflow connection is closed at check-in and reopened by the next burst (a connect, type
            # introspection and its prepared statements lost each time). Beyond the cap callers wait
            # up to `pool_timeout` for a connection.
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=connect_timeout_s,
            connect_args=options,
            pool_recycle=1800,
        )
        if listen_dsn is None and pooler == "none":
            listen_dsn = dsn
        return cls(engine, listen_dsn=libpq_dsn(listen_dsn) if listen_dsn else None, hosts=hosts)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.engine, self.hosts)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled driver connection in autocommit, for hot paths that are one statement (one
        statement is one transaction): one round trip instead of BEGIN, statement, COMMIT.

        Checked out of the engine's pool itself, not through an `AsyncConnection` (its begin/close
        events and bookkeeping, per use, are a measurable share of a ticket create: bench/results/
        changes.md): the same connections and the same DB_POOL_SIZE budget as the units of work."""
        fairy = await _checkout(self.engine, self.hosts)
        driver: asyncpg.Connection = fairy.driver_connection
        try:
            yield driver
        finally:
            await _check_in(fairy, driver)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()


async def _checkout(engine: AsyncEngine, hosts: Hosts) -> PoolProxiedConnection:
    """A pooled connection on the host new connections reach: one left from before a failover is
    dropped, not used (keel.core.db_hosts)."""
    pool = engine.sync_engine.pool
    while True:
        fairy = await greenlet_spawn(pool.connect)
        if not hosts.stale(fairy.driver_connection):
            return fairy
        await greenlet_spawn(fairy.invalidate)
        await greenlet_spawn(fairy.close)


async def _check_in(fairy: PoolProxiedConnection, driver: asyncpg.Connection) -> None:
    """Back to the pool with no transaction left open; a connection the server closed (restart,
    failover, killed backend) is dropped, not handed out again.

    So is one whose statement was cancelled mid-flight (a timeout, a caller gone, its server killed):
    asyncpg sends the server a cancel request in the background, and until that ends every use of the
    connection fails with "another operation is in progress" (seen as 500s during a primary failover).
    asyncpg's own pool waits for that cancel; dropping the connection is cheaper than the wait.

    The check-in itself may be cancelled (a deadline or a shutdown while the ROLLBACK waits on a
    server gone silent): the connection is dropped and still leaves the caller's hands, or the pool
    would count it as checked out until the garbage collector found it."""
    try:
        _terminate_if_cancelling(driver)
        if not driver.is_closed() and driver.is_in_transaction():
            try:
                await driver.execute("ROLLBACK")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                driver.terminate()  # unusable: dropped below
            except BaseException:
                driver.terminate()  # cancelled mid-rollback: its state is unknown
                raise
    finally:
        if driver.is_closed():
            await greenlet_spawn(fairy.invalidate)
        await greenlet_spawn(fairy.close)


class TransactionFailed(RuntimeError):
    """COMMIT found the transaction failed (a statement in it had errored): it was rolled back."""


class UnitOfWork:
    """One transaction. It rolls back unless the use case calls `commit()`; nothing else commits.

    Callbacks registered with `after_commit` run once the commit succeeded (cache invalidation,
    waking the outbox relay): they never run for a transaction that did not commit.

    The transaction is the driver connection's own, checked out of the engine's pool as
    `connection()` checks one out: SQLAlchemy's connection and transaction objects around it added
    three quarters again to the CPU of BEGIN, a statement and COMMIT on the driver
    (bench/results/changes.md), and every use case speaks asyncpg through `raw()`."""

    def __init__(self, engine: AsyncEngine, hosts: Hosts) -> None:
        self._engine = engine
        self._hosts = hosts
        self._fairy: PoolProxiedConnection | None = None
        self._driver: asyncpg.Connection | None = None
        self._after_commit: list[AfterCommit] = []
        self.committed = False

    def _checked_out(self) -> asyncpg.Connection:
        if self._driver is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._driver

    async def raw(self) -> asyncpg.Connection:
        """The driver connection, inside this unit of work's transaction (begun on first use)."""
        driver = self._checked_out()
        if not driver.is_in_transaction():
            await driver.execute("BEGIN")
        return driver

    def after_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)

    async def __aenter__(self) -> UnitOfWork:
        self._fairy = await _checkout(self._engine, self._hosts)
        self._driver = self._fairy.driver_connection
        return self

    async def commit(self) -> None:
        driver = self._checked_out()
        # PostgreSQL answers COMMIT of a failed transaction with ROLLBACK, not an error.
        if driver.is_in_transaction() and await driver.execute("COMMIT") != "COMMIT":
            raise TransactionFailed("the transaction had failed and was rolled back, not committed")
        self.committed = True
        for callback in self._after_commit:
            await callback()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        fairy, driver = self._fairy, self._driver
        self._fairy = self._driver = None
        if fairy is not None and driver is not None:
            await _check_in(fairy, driver)  # rolls back what was not committed
