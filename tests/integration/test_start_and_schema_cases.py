"""What an operator meets at start, as processes: the exit status and the one line of a dependency that
refuses us; migrators started together; an older release on a newer schema; Redis that comes up after
the service (docs/observability.md's table, docs/tickets-ha.md's migrations)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from keel.core.settings import Settings
from keel.tickets.spec import SPEC as TICKETS
from tests.integration.test_migrate_and_start import HEAD, keel, revision
from tests.support.eventually import eventually
from tests.support.migrations import migrate_at_once, operator_env
from tests.support.servers import free_port, redis_server, running
from tests.support.serving import serving_app

SECRET = "s" * 32


def _one_error_line(lines: list[str], *needles: str) -> str:
    output = "\n".join(lines)
    assert "Traceback" not in output, output
    found = [line for line in lines if all(n in line for n in needles)]
    assert len(found) == 1, output
    return found[0]


def test_postgresql_unreachable_is_one_line_and_exit_3_from_serve_worker_and_workers_and_2_from_migrate(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql://keel:hunter2@127.0.0.1:{free_port()}/keel"
    status, lines = keel(
        ["serve", "tickets", "--port", str(free_port())], tmp_path, POSTGRES_DSN=nowhere, SECRET=SECRET
    )
    assert status == 3, lines  # the start failed: a supervisor restarts it, with backoff
    line = _one_error_line(lines, "cannot connect to PostgreSQL", "check POSTGRES_DSN")
    assert "hunter2" not in "\n".join(lines), line

    # The same from a worker process, and from `--workers 2`: the first worker's failed start is the
    # service's (keel.core.processes), not a worker restarted forever.
    for argv in (["worker", "tickets"], ["serve", "tickets", "--workers", "2"]):
        status, lines = keel(
            [*argv, "--port", str(free_port())], tmp_path, POSTGRES_DSN=nowhere, SECRET=SECRET
        )
        assert status == 3, (argv, lines)
        _one_error_line(lines, "cannot connect to PostgreSQL", "check POSTGRES_DSN")

    status, lines = keel(["migrate"], tmp_path, POSTGRES_DSN=nowhere)
    assert status == 2, lines
    _one_error_line(lines, "cannot connect to PostgreSQL", "check POSTGRES_DSN")


def test_redis_refusing_the_credentials_is_one_line_and_exit_3(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    wrong = redis_url.replace("redis://", "redis://nobody:not-the-password@", 1)
    status, lines = keel(
        ["serve", "tickets", "--port", str(free_port())],
        tmp_path,
        POSTGRES_DSN=pg_dsn,
        REDIS_URL=wrong,
        SECRET=SECRET,
    )
    assert status == 3, lines
    _one_error_line(lines, "refused the credentials", "REDIS_URL")
    assert "not-the-password" not in "\n".join(lines)


async def test_migrators_started_together_take_turns_and_all_succeed(bare_dsn: str, tmp_path: Path) -> None:
    # Rollout jobs at once (a retried Job, two clusters' hooks): without the advisory lock they would
    # create the same tables and all but one would fail half-way.
    outcomes = await migrate_at_once(operator_env(POSTGRES_DSN=bare_dsn), tmp_path)
    assert [status for status, _ in outcomes] == [0, 0, 0], [output[-2000:] for _, output in outcomes]
    assert await revision(bare_dsn) == HEAD
    conn = await asyncpg.connect(bare_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1
    finally:
        await conn.close()


async def test_an_older_release_starts_on_a_database_a_newer_one_migrated(
    make_settings: Callable[..., Settings], fresh_pg_dsn: str
) -> None:
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        # A revision this code does not know: the next release's, migrated before the rollout.
        await conn.execute("UPDATE alembic_version SET version_num = '9990'")
    finally:
        await conn.close()
    async with serving_app([TICKETS], make_settings(postgres_dsn=fresh_pg_dsn), run_workers=False) as (
        _,
        client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        created = await client.post(
            "/v1/tickets",
            json={"title": "after the rollout", "description": "d"},
            headers={"X-User-Id": "olga"},
        )
        assert created.status_code == 201, created.text
    assert await revision(fresh_pg_dsn) == "9990"  # nothing moved back


async def test_redis_that_comes_up_after_the_service_is_used_without_a_restart(
    make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    port = free_port()
    settings = make_settings(postgres_dsn=pg_dsn, redis_url=f"redis://127.0.0.1:{port}/0")
    async with serving_app([TICKETS], settings, run_workers=False) as (_, client):
        assert (await client.get("/readyz")).status_code == 503
        with running(redis_server(port)):
            await eventually(
                lambda: client.get("/readyz"),
                until=lambda r: r.status_code == 200,
                timeout_s=30,
                interval_s=0.2,
                what="/readyz 200 once Redis is up",
            )
            user = {"X-User-Id": "olga"}
            body = {"title": "after Redis came up", "description": "d"}
            created = await client.post("/v1/tickets", json=body, headers=user)
            assert created.status_code == 201, created.text
            assert (await client.get("/v1/tickets", headers=user)).status_code == 200
            redis = Redis(port=port)
            try:
                assert await redis.dbsize() > 0, "the list page and the key went to Redis"
            finally:
                await redis.aclose()
