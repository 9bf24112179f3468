"""`keel migrate --revision X` moves the database up or down and says what it did; processes migrate
at start only where documented (`keel up`, the embedded PostgreSQL, MIGRATE_ON_START=true) and
otherwise refuse a database behind the code in one line; a bad setting is one line from every
command, and `--debug` shows the traceback instead; Redis unreachable at start is one warning."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from keel.core.errors import StartupError
from keel.core.runtime import migrates_at_start
from keel.core.schema import migrate, script
from keel.core.settings import Settings
from keel.tickets.spec import SPEC as TICKETS
from tests.support.migrations import operator_env
from tests.support.servers import free_port
from tests.support.serving import serving_app

HEAD = str(script().get_current_head())
BELOW = str(script().get_revision(HEAD).down_revision)  # the one before the last


def keel(argv: list[str], tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    """Runs `keel ARGV` as an operator would: no test variables, no .env; (exit status, output lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", *argv],
        env=operator_env(COLUMNS="400", **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()


async def revision(dsn: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def test_migrate_moves_down_and_up_to_a_revision_and_says_what_it_did(
    fresh_pg_dsn: str, tmp_path: Path
) -> None:
    assert await revision(fresh_pg_dsn) == HEAD

    def said(argv: list[str]) -> tuple[int, str]:
        status, lines = keel(argv, tmp_path, POSTGRES_DSN=fresh_pg_dsn)
        return status, lines[-1]  # after alembic's own log lines (which steps ran)

    assert said(["migrate", "--revision", BELOW]) == (0, f"migrated from {HEAD} to {BELOW}")
    assert await revision(fresh_pg_dsn) == BELOW
    assert said(["migrate", "--revision", BELOW]) == (0, f"already at {BELOW}")
    assert said(["migrate"]) == (0, f"migrated from {BELOW} to {HEAD}")
    assert await revision(fresh_pg_dsn) == HEAD


async def test_migrate_to_base_empties_the_database_and_back_to_head_rebuilds_it(
    fresh_pg_dsn: str, tmp_path: Path
) -> None:
    """README: `keel migrate --revision base` empties it (every migration's downgrade runs)."""
    status, lines = keel(["migrate", "--revision", "base"], tmp_path, POSTGRES_DSN=fresh_pg_dsn)
    assert (status, lines[-1]) == (0, f"migrated from {HEAD} to base")
    assert await revision(fresh_pg_dsn) is None
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        left = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert [r["tablename"] for r in left] in ([], ["alembic_version"])
    status, lines = keel(["migrate"], tmp_path, POSTGRES_DSN=fresh_pg_dsn)
    assert (status, lines[-1]) == (0, f"migrated from base to {HEAD}")
    assert await revision(fresh_pg_dsn) == HEAD


def test_an_unknown_revision_is_refused_in_one_line(fresh_pg_dsn: str, tmp_path: Path) -> None:
    status, lines = keel(["migrate", "--revision", "0999"], tmp_path, POSTGRES_DSN=fresh_pg_dsn)
    assert status == 2, lines
    assert len(lines) == 1, lines
    assert "unknown revision '0999'" in lines[0] and HEAD in lines[0] and "head" in lines[0]


@pytest.mark.parametrize(
    "argv",
    [["migrate"], ["serve", "tickets"], ["worker", "tickets"], ["up"], ["orders", "produce", "-n", "1"]],
    ids=" ".join,
)
def test_a_bad_setting_is_one_line_naming_it_from_every_command(argv: list[str], tmp_path: Path) -> None:
    status, lines = keel(argv, tmp_path, DB_POOL_SIZE="many", SECRET="s" * 32)
    assert status == 2, lines
    assert len(lines) == 1, lines
    assert "DB_POOL_SIZE" in lines[0] and "many" not in lines[0]


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    status, lines = keel(["--debug", "migrate"], tmp_path, DB_POOL_SIZE="many")
    output = "\n".join(lines)
    assert status not in (0, 2), output
    assert "Traceback" in output and "ValidationError" in output and len(lines) > 5


def test_serve_refuses_a_database_that_was_never_migrated_in_one_line(bare_dsn: str, tmp_path: Path) -> None:
    status, lines = keel(
        ["serve", "tickets", "--port", str(free_port())], tmp_path, POSTGRES_DSN=bare_dsn, SECRET="s" * 32
    )
    output = "\n".join(lines)
    assert status == 3, output
    assert "Traceback" not in output
    refusals = [line for line in lines if "run `keel migrate` once per release" in line]
    assert len(refusals) == 1 and "base (empty)" in refusals[0] and HEAD in refusals[0], output


async def test_a_process_on_a_database_behind_the_code_refuses_to_start_unless_it_migrates(
    make_settings: Callable[..., Settings], fresh_pg_dsn: str
) -> None:
    await migrate(fresh_pg_dsn, BELOW)
    with pytest.raises(StartupError) as refused:
        async with serving_app([TICKETS], make_settings(postgres_dsn=fresh_pg_dsn), run_workers=False):
            pass
    assert f"at revision {BELOW}" in str(refused.value) and f"needs {HEAD}" in str(refused.value)
    assert await revision(fresh_pg_dsn) == BELOW  # nothing migrated behind the operator's back

    settings = make_settings(postgres_dsn=fresh_pg_dsn, migrate_on_start=True)
    async with serving_app([TICKETS], settings, run_workers=False) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
    assert await revision(fresh_pg_dsn) == HEAD


async def test_migrate_on_start_builds_a_bare_database(
    make_settings: Callable[..., Settings], bare_dsn: str
) -> None:
    settings = make_settings(postgres_dsn=bare_dsn, migrate_on_start=True)
    async with serving_app([TICKETS], settings, run_workers=False) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
    assert await revision(bare_dsn) == HEAD


def test_who_migrates_at_start_by_default() -> None:
    real = Settings.model_validate({"postgres_dsn": "postgresql://keel@db/keel"})
    embedded = Settings.model_validate({})
    assert migrates_at_start(real, embedded=True)  # keel up
    assert not migrates_at_start(real, embedded=False)  # keel serve / keel worker
    assert migrates_at_start(embedded, embedded=False)  # a lone process on the embedded PostgreSQL
    off = Settings.model_validate({"postgres_dsn": "postgresql://keel@db/keel", "migrate_on_start": False})
    assert not migrates_at_start(off, embedded=True)


async def test_redis_unreachable_at_start_is_one_warning_and_the_process_serves_degraded(
    make_settings: Callable[..., Settings], pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(postgres_dsn=pg_dsn, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="keel.infra"):
        async with serving_app([TICKETS], settings, run_workers=False) as (_, client):
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "redis" in ready.json()["error"]["message"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "keel.infra"]
    assert len(warnings) == 1, warnings
    assert "Redis unreachable" in warnings[0] and "starting degraded" in warnings[0]
    assert "REDIS_URL" in warnings[0]


async def test_redis_refusing_the_credentials_stops_the_start_in_one_line(
    make_settings: Callable[..., Settings], pg_dsn: str, redis_url: str
) -> None:
    wrong = redis_url.replace("redis://", "redis://nobody:not-the-password@", 1)
    settings = make_settings(postgres_dsn=pg_dsn, redis_url=wrong)
    with pytest.raises(StartupError) as refused:
        async with serving_app([TICKETS], settings, run_workers=False):
            pass
    message = str(refused.value)
    assert "refused the credentials" in message and "REDIS_URL" in message
    assert "not-the-password" not in message and "\n" not in message
