"""`keel migrate` through PgBouncer in transaction mode (docs/production.md): the statement cache off,
the migrators' advisory lock transaction-scoped, so several at once still take turns."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_migrate_and_start import HEAD, revision
from tests.support.migrations import migrate_at_once, operator_env
from tests.support.servers import ChildServer, through


async def test_migrators_through_the_pooler_take_turns_and_reach_head(
    bare_dsn: str, pgbouncer: ChildServer, tmp_path: Path
) -> None:
    env = operator_env(POSTGRES_DSN=through(pgbouncer, bare_dsn), DB_POOLER="pgbouncer")
    outcomes = await migrate_at_once(env, tmp_path)
    assert [status for status, _ in outcomes] == [0, 0, 0], [output[-2000:] for _, output in outcomes]
    assert await revision(bare_dsn) == HEAD
