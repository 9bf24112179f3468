"""The ticket unit of work: the port the use cases see, and its PostgreSQL adapter.

A unit of work holds one ticket change (staged by the repository) and the events the use case
collected; `commit()` writes both atomically, and leaving it without a commit writes nothing. The
PostgreSQL adapter writes them as one statement on an autocommit connection, which is one transaction
in one round trip; concurrent creates share that statement (group commit, keel.core.batching).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from types import TracebackType
from typing import Protocol

import asyncpg

from keel.core.db import Database
from keel.core.events import Event
from keel.core.outbox import outbox_row
from keel.tickets.model import IdempotencyRecord, StoredAttachment, Ticket
from keel.tickets.repository import Creates, PgTicketRepository
from keel.tickets.schemas import TicketEvents, TicketStatus


class TicketRepository(Protocol):
    async def get(self, ticket_id: str) -> Ticket | None: ...

    async def owned_by(
        self, user: str, status: TicketStatus | None, limit: int, offset: int
    ) -> list[Ticket]: ...

    async def idempotency_record(self, user: str, key: str) -> IdempotencyRecord | None: ...

    async def attachments(self, ticket_id: str) -> list[StoredAttachment]: ...

    async def attachment_usage(self, ticket_id: str, user: str) -> tuple[int, int]:
        """(attachments on the ticket, bytes `user` has uploaded): what the quotas count."""

    def add(self, ticket: Ticket, idempotency: tuple[str, IdempotencyRecord] | None) -> None:
        """Stage a new ticket; with `(key, record)` it is written only if the user's key is new."""

    def close(self, ticket_id: str, user: str, now: datetime) -> None:
        """Stage the close of an OPEN ticket of `user`; any other ticket is left as it is."""

    def add_attachment(self, attachment: StoredAttachment, user: str) -> None: ...


class TicketUnitOfWork(ABC):
    """`async with uow:` then at most one staged change and its events, then `await uow.commit()`."""

    tickets: TicketRepository

    def __init__(self) -> None:
        self._events: list[Event] = []

    def collect(self, event: Event) -> None:
        """An event of the staged change: written by `commit()` with it, or not at all."""
        self._events.append(event)

    async def commit(self) -> Ticket | None:
        """Write the staged change and its events. The ticket a ticket change wrote; None when its
        condition did not hold (the key was taken, the ticket was not an OPEN one of the user's) and
        nothing was written, or for a change that is not a ticket's (an attachment)."""
        events, self._events = self._events, []
        return await self._write(events)

    @abstractmethod
    async def _write(self, events: Sequence[Event]) -> Ticket | None: ...

    @abstractmethod
    async def __aenter__(self) -> TicketUnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._events = []  # not committed: never written


UnitOfWorkFactory = Callable[[], TicketUnitOfWork]


class PgTicketUnitOfWork(TicketUnitOfWork):
    """On a pooled connection in autocommit (keel.core.db.Database.connection), taken when a read or
    a change other than a create first needs it; creates go to PostgreSQL with other requests'
    (`creates`, a group commit on connections of its own). `wake` is called once an event is
    committed (an in-process outbox relay then publishes it at once)."""

    def __init__(
        self, db: Database, *, outbox_shards: int, wake: Callable[[], None], creates: Creates
    ) -> None:
        super().__init__()
        self._db = db
        self._shards = outbox_shards
        self._wake = wake
        self._creates = creates
        # Holds the pooled connection once it is open (and only then: a connect that failed has
        # nothing to release, and its context manager must not be exited).
        self._held = AsyncExitStack()
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> PgTicketUnitOfWork:
        self.tickets = self._repository = PgTicketRepository(self._connect, self._creates)
        return self

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is None:
            self._conn = await self._held.enter_async_context(self._db.connection())
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        self._conn = None
        await self._held.__aexit__(exc_type, exc, tb)

    async def _write(self, events: Sequence[Event]) -> Ticket | None:
        rows = [outbox_row(e, TicketEvents.TOPIC, self._shards) for e in events]
        written = await self._repository.write(rows)
        if rows and written is not None:
            self._wake()
        return written
