"""Every table of every service on one MetaData, and the migrations that build them."""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from keel.core.db import Pooler, connect_args, normalize_dsn
from keel.core.errors import StartupError
from keel.core.tables import metadata

# Each service's tables module registers its tables on the shared MetaData when imported.
TABLE_MODULES: tuple[str, ...] = (
    "keel.core.tables",
    "keel.tickets.tables",
    "keel.cityguide.orchestrator.tables",
    "keel.videos.tables",
    "keel.orders.tables",
    "keel.ops.tables",
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
    engine = create_async_engine(normalize_dsn(dsn), connect_args=connect_args(pooler))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def resolve_revision(revision: str) -> str | None:
    """`head`, `base` or a revision id (or a unique prefix of one) → its id (None: base), or a
    StartupError naming the revisions there are."""
    if revision == "base":
        return None
    scripts = script()
    try:
        found = scripts.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        known = ", ".join(reversed([r.revision for r in scripts.walk_revisions()]))
        raise StartupError(f"unknown revision {revision!r}: use one of {known}, head or base")
    return found.revision


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _move(connection: Connection, target: str | None) -> tuple[str | None, str | None]:
    before = _current(connection)
    if before == target:
        return before, before
    config = alembic_config()
    config.attributes["connection"] = connection
    below = before is not None and target in {
        r.revision for r in script().walk_revisions(base="base", head=before)
    }
    if target is None or below:
        command.downgrade(config, target or "base")
    else:
        command.upgrade(config, target)
    return before, _current(connection)


async def migrate(
    dsn: str, revision: str = "head", *, pooler: Pooler = "none"
) -> tuple[str | None, str | None]:
    """Move the database up or down to `revision`; returns its revisions before and after (None: no
    migration applied). Serialised across processes like `upgrade`."""
    target = resolve_revision(revision)
    engine = create_async_engine(normalize_dsn(dsn), connect_args=connect_args(pooler))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            return await conn.run_sync(_move, target)
    finally:
        await engine.dispose()


async def require_current(dsn: str, *, pooler: Pooler = "none") -> None:
    """A process that does not migrate at start checks that someone did: a database behind this code
    stops start-up with one line saying what to run. One ahead of it (a newer release migrated first,
    this older process restarts meanwhile) is let through."""
    engine = create_async_engine(normalize_dsn(dsn), connect_args=connect_args(pooler))
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    scripts = script()
    head = scripts.get_current_head()
    if current == head:
        return
    known = {r.revision for r in scripts.walk_revisions()}
    if current is not None and current not in known:
        return  # ahead of this code: its tables are a superset of what it needs
    raise StartupError(
        f"the database is at revision {current or 'base (empty)'}, this release needs {head}: run "
        "`keel migrate` once per release before starting services (or set MIGRATE_ON_START=true)"
    )
