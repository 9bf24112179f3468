"""Keeps every replica's order cache fresh: the replica whose consumer wrote an order tells the others.

Replicas share one consumer group, so only the owner of an order's partition ingests it and updates
its cache; the others would serve their old copy for as long as it stayed cached. The ingest
transaction therefore also sends `NOTIFY keel_orders_changed` with the orders it wrote. PostgreSQL
delivers a notification only when its transaction commits, and to every listening connection, so a
replica evicts an order exactly when the new version is readable: a read right after the eviction
gets the new row, and a read begun before it cannot put the old one back (`OrderCache.forget_many`).

A replica that is not listening (starting, or its connection to PostgreSQL lost, or gone silent: see
`_until_lost`) could miss notifications: its cache stays off (`OrderCache.live`) until it listens
again, and it starts over from an empty cache then. The LISTEN connection goes to PostgreSQL itself (`Database.listen_dsn`), as
the outbox relay's does: a pooler in transaction mode does not carry notifications. Without such a
DSN there is no cache at all (`keel.orders.spec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import asyncpg

from keel.core import db_hosts
from keel.core.db import Database
from keel.orders.cache import OrderCache

log = logging.getLogger("keel.orders")

CHANNEL = "keel_orders_changed"
# PostgreSQL refuses payloads of 8,000 bytes or more: order ids are sent in chunks below that.
PAYLOAD_LIMIT = 7_000
# How often the LISTEN connection is asked whether it still answers (and how long it has to).
HEARTBEAT_S = 5.0
# Every chunk in one statement: one round trip per ingest batch, however many chunks.
NOTIFY = "SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS p"


def payloads(sender: str, order_uids: Sequence[str]) -> Iterator[str]:
    """`sender|uid,uid,...` chunks, each under PAYLOAD_LIMIT bytes."""
    chunk: list[str] = []
    size = len(sender) + 1
    for uid in order_uids:
        if chunk and size + len(uid) + 1 > PAYLOAD_LIMIT:
            yield f"{sender}|{','.join(chunk)}"
            chunk, size = [], len(sender) + 1
        chunk.append(uid)
        size += len(uid) + 1
    if chunk:
        yield f"{sender}|{','.join(chunk)}"


class CacheInvalidation:
    """The worker that listens for other replicas' writes and evicts them from this one's cache."""

    name = "orders-cache-invalidation"

    def __init__(
        self,
        db: Database,
        cache: OrderCache,
        *,
        sender: str,
        warm: Callable[[], Awaitable[int]] | None = None,
        retry_s: float = 1.0,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        if db.listen_dsn is None:
            raise ValueError("no direct DSN to LISTEN on (DB_POOLER is set and POSTGRES_LISTEN_DSN is not)")
        self._dsn = db.listen_dsn
        self._cache = cache
        self._warm = warm
        self._retry_s = retry_s
        self._heartbeat_s = heartbeat_s
        # This process's own notifications are skipped: its cache already holds what it wrote.
        self.sender = sender
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()  # set by stop() and when the LISTEN connection is lost
        self._conn: asyncpg.Connection | None = None
        cache.live = False

    async def open(self) -> None:
        """Listen, then warm the cache and turn it on: called at start, so a process serves from a
        warm cache from its first request. A failure leaves the cache off until `run()` listens."""
        try:
            self._conn = await self._listen()
        except db_hosts.CONNECT_FAILURES as exc:
            log.warning("order cache off until it listens for other replicas' writes (%r)", exc)

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._conn or await self._listen()
            except db_hosts.CONNECT_FAILURES as exc:
                log.warning("order cache off: not listening for other replicas' writes (%r)", exc)
            else:
                self._conn = None
                await self._until_lost(conn)
                if not conn.is_closed():
                    conn.terminate()
            self._cache.live = False
            await self._wait(self._retry_s)

    async def _until_lost(self, conn: asyncpg.Connection) -> None:
        """Until stop() or the connection is lost. A connection whose server stops answering without a
        reset (its machine lost, a network partition) is never reported lost: it is asked a trivial
        query every `heartbeat_s`, and one not answered within that counts as lost (the cache goes off
        instead of serving orders whose updates it no longer hears of)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s):
                    await self._changed.wait()  # stop() or the connection lost (`_lost`)
                return
            try:
                await conn.fetchval("SELECT 1", timeout=self._heartbeat_s)
            except db_hosts.CONNECT_FAILURES as exc:
                log.warning("order cache off: its LISTEN connection stopped answering (%r)", exc)
                self._lost(conn)
                return

    async def _listen(self) -> asyncpg.Connection:
        conn = await db_hosts.connect(self._dsn, timeout=5)
        try:
            await conn.add_listener(CHANNEL, self._notified)
            # The connection lost, notifications may be missed: the cache goes off at once.
            if not self._stop.is_set():
                self._changed.clear()
            conn.add_termination_listener(self._lost)
            # Whatever changed while nobody listened is unknown: start over, warmed from the database
            # now that every later change reaches this process.
            self._cache.clear()
            if self._warm is not None:
                log.info("order cache on; %d orders loaded", await self._warm())
        except BaseException:
            conn.terminate()
            raise
        self._cache.live = True
        return conn

    def _lost(self, _conn: Any) -> None:
        self._cache.live = False
        self._changed.set()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        sender, _, uids = payload.partition("|")
        if sender != self.sender and uids:
            self._cache.forget_many(uids.split(","))

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        conn, self._conn = self._conn, None  # opened but never run
        if conn is not None:
            conn.terminate()
