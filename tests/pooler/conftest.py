"""The pooler suite: the services' own integration tests again, with Debian's PgBouncer in transaction
mode between each app and PostgreSQL (DB_POOLER=pgbouncer), as production runs them (docs/production.md).

`app_database` routes every app these tests start through PgBouncer; LISTEN goes straight to
PostgreSQL (POSTGRES_LISTEN_DSN), and the tests' own checks read PostgreSQL directly. PgBouncer gives
each database a few server connections, so the apps' connections share them as they do in production.
Without a `pgbouncer` binary the suite is skipped, unless CI is set: there it fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from keel.core.db import Database
from tests.support import servers
from tests.support.servers import through


@pytest.fixture(scope="session")
def pgbouncer(pg_server_dsn: str) -> Iterator[servers.ChildServer]:
    if servers.pgbouncer_binary() is None:
        reason = "the pooler suite needs PgBouncer: apt-get install pgbouncer (.ci/run installs it)"
        if servers.env("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with servers.running(servers.pgbouncer_server(pg_server_dsn)) as server:
        yield server


@pytest.fixture(scope="session")
def app_database(pgbouncer: servers.ChildServer) -> Callable[[str], dict[str, Any]]:
    return lambda dsn: {
        "postgres_dsn": through(pgbouncer, dsn),
        "db_pooler": "pgbouncer",
        "postgres_listen_dsn": dsn,
    }


@pytest_asyncio.fixture
async def db(fresh_pg_dsn: str, pgbouncer: servers.ChildServer) -> AsyncIterator[Database]:
    """Like the suite-wide `db`, through PgBouncer, listening on PostgreSQL itself."""
    database = Database.connect(
        through(pgbouncer, fresh_pg_dsn), pool_size=5, pooler="pgbouncer", listen_dsn=fresh_pg_dsn
    )
    yield database
    await database.dispose()
