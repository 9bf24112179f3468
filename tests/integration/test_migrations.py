"""The migrations and the table definitions agree, and the history goes down and up again."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from keel.core.db import normalize_dsn
from keel.core.schema import all_metadata, upgrade
from tests.support.migrations import downgrade


async def test_models_match_the_migrated_schema(pg_dsn):
    engine = create_async_engine(normalize_dsn(pg_dsn))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), all_metadata())
            )
    finally:
        await engine.dispose()
    assert diff == [], f"tables differ from migrations; add a migration: {diff}"


async def test_history_downgrades_to_base_and_upgrades_again(fresh_pg_dsn):
    await downgrade(fresh_pg_dsn, "base")
    await upgrade(fresh_pg_dsn)
    await upgrade(fresh_pg_dsn)  # a second run is a no-op
