"""Moving a test database's schema back to an earlier revision (the way forward is keel.core.schema.upgrade),
and migrators started together."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from keel.core.db import normalize_dsn
from keel.core.schema import alembic_config


async def downgrade(dsn: str, revision: str) -> None:
    """The schema of `dsn` down to `revision` ("base": nothing of ours left)."""
    engine = create_async_engine(normalize_dsn(dsn))

    def down(sync: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync
        command.downgrade(config, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(down)
    finally:
        await engine.dispose()


async def migrate_at_once(env: dict[str, str], cwd: Path, count: int = 3) -> list[tuple[int | None, str]]:
    """`keel migrate` started `count` times at once with `env` (as rollout jobs may); (exit, output) each."""
    migrators = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keel.cli",
            "migrate",
            env={**env, "COLUMNS": "400"},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(count)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(m.communicate() for m in migrators)), 180)
    return [(m.returncode, out.decode()) for m, (out, _) in zip(migrators, outputs, strict=True)]


def operator_env(**values: str) -> dict[str, str]:
    """The environment an operator's shell would have: no test variables, then `values`."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "KAFKA_", "PROMETHEUS_"))
    } | values
