"""Moving a test database's schema back to an earlier revision (the way forward is keel.core.schema.upgrade)."""

from __future__ import annotations

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
