"""LISTEN on the outbox channel, so a relay wakes as soon as a notifying writer commits.

A convenience on top of polling, never a requirement: while the connection is down the relay just
polls, and the connection is re-opened (at most every `retry_s`) when the database is back. It goes
to `Database.listen_dsn`: PostgreSQL itself, never a pooler in transaction mode, which would carry
the LISTEN on some server connection and deliver nothing to us.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from keel.core import db_hosts
from keel.core.db import Database
from keel.core.outbox.writer import OUTBOX_CHANNEL

log = logging.getLogger("keel.outbox")


class Listener:
    def __init__(
        self,
        db: Database,
        on_notify: Callable[[], None],
        *,
        retry_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        if db.listen_dsn is None:
            raise ValueError("no direct DSN to LISTEN on (DB_POOLER is set and POSTGRES_LISTEN_DSN is not)")
        self._dsn = db.listen_dsn
        self._on_notify = on_notify
        self._retry_s = retry_s
        self._connect_timeout_s = connect_timeout_s
        self._conn: asyncpg.Connection | None = None
        self._next_attempt = 0.0

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def ensure(self) -> None:
        """Open the LISTEN connection if it is not open and a retry is due; never raises."""
        if self.listening or time.monotonic() < self._next_attempt:
            return
        await self.close()
        self._next_attempt = time.monotonic() + self._retry_s
        try:
            conn = await db_hosts.connect(self._dsn, timeout=self._connect_timeout_s)
        except db_hosts.CONNECT_FAILURES as exc:
            log.debug("outbox LISTEN connection unavailable, polling only: %r", exc)
            return
        try:
            await conn.add_listener(OUTBOX_CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError) as exc:
            log.debug("outbox LISTEN failed, polling only: %r", exc)
            await conn.close()
            return
        self._conn = conn
        # Notifications sent while we were not listening are gone: look once now.
        self._on_notify()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError):
                conn.terminate()

    def _notified(self, *_: Any) -> None:
        self._on_notify()
