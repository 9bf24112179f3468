"""Every table of every service on one MetaData, and the migrations that build them."""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from keel.core.db import Pooler, normalize_dsn, pooler_connect_args
from keel.core.tables import metadata

# Each service's tables module registers its tables on the shared MetaData when imported.
TABLE_MODULES: tuple[str, ...] = (
    "keel.core.tables",
    "keel.tickets.tables",
    "keel.cityguide.orchestrator.tables",
    "keel.videos.tables",
    "keel.orders.tables",
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Several processes may start at once (`keel serve` per service): one migrates, the others wait.
_MIGRATION_LOCK = 0x6B65656C  # "keel"


def all_metadata() -> MetaData:
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return metadata


def alembic_config(dsn: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if dsn:
        config.set_main_option("sqlalchemy.url", normalize_dsn(dsn).replace("%", "%%"))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(dsn: str, revision: str = "head", *, pooler: Pooler = "none") -> None:
    """Apply migrations up to `revision`, serialised across processes by an advisory lock (a
    transaction one: it holds behind a pooler in transaction mode too)."""
    engine = create_async_engine(normalize_dsn(dsn), connect_args=pooler_connect_args(pooler))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()
