"""An in-memory ticket unit of work: the same port as PostgreSQL's, for the rules' unit tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from keel.core.events import Event
from keel.tickets.model import IdempotencyRecord, StoredAttachment, Ticket
from keel.tickets.schemas import TicketStatus
from keel.tickets.unit_of_work import TicketUnitOfWork

Change = Callable[["Tables"], Ticket | None]


@dataclass
class Tables:
    """What the database would hold: rows, durable idempotency records and the outbox."""

    tickets: dict[str, Ticket] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)
    attachments: list[StoredAttachment] = field(default_factory=list)
    uploaders: dict[str, str] = field(default_factory=dict)  # attachment id -> user
    outbox: list[Event] = field(default_factory=list)
    commits: int = 0


class FakeTickets:
    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self.staged: Change | None = None

    async def get(self, ticket_id: str) -> Ticket | None:
        return self._tables.tickets.get(ticket_id)

    async def owned_by(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> list[Ticket]:
        mine = [t for t in self._tables.tickets.values() if t.created_by == user]
        mine = [t for t in mine if status is None or t.status is status]
        mine.sort(key=lambda t: t.created_at, reverse=True)
        return mine[offset : offset + limit]

    async def idempotency_record(self, user: str, key: str) -> IdempotencyRecord | None:
        return self._tables.idempotency.get((user, key))

    async def attachments(self, ticket_id: str) -> list[StoredAttachment]:
        return [a for a in self._tables.attachments if a.ticket_id == ticket_id]

    async def attachment_usage(self, ticket_id: str, user: str) -> tuple[int, int]:
        t = self._tables
        mine = sum(a.size_bytes for a in t.attachments if t.uploaders[a.id] == user)
        return len(await self.attachments(ticket_id)), mine

    def add(self, ticket: Ticket, idempotency: tuple[str, IdempotencyRecord] | None) -> None:
        def change(tables: Tables) -> Ticket | None:
            if idempotency is not None:
                key = (ticket.created_by, idempotency[0])
                if key in tables.idempotency:
                    return None
                tables.idempotency[key] = idempotency[1]
            tables.tickets[ticket.id] = ticket
            return ticket

        self._stage(change)

    def close(self, ticket_id: str, user: str, now: datetime) -> None:
        def change(tables: Tables) -> Ticket | None:
            ticket = tables.tickets.get(ticket_id)
            if ticket is None or ticket.created_by != user or ticket.status is not TicketStatus.OPEN:
                return None
            closed = tables.tickets[ticket_id] = replace(ticket, status=TicketStatus.CLOSED, updated_at=now)
            return closed

        self._stage(change)

    def add_attachment(self, attachment: StoredAttachment, user: str) -> None:
        def change(tables: Tables) -> Ticket | None:
            tables.attachments.append(attachment)
            tables.uploaders[attachment.id] = user
            return None

        self._stage(change)

    def _stage(self, change: Change) -> None:
        assert self.staged is None, "one change per unit of work"
        self.staged = change


class FakeUnitOfWork(TicketUnitOfWork):
    """`fail_commit`: the commit raises (the database went away) and writes nothing."""

    def __init__(self, tables: Tables, fail_commit: Exception | None = None) -> None:
        super().__init__()
        self._tables = tables
        self._fail_commit = fail_commit

    async def __aenter__(self) -> FakeUnitOfWork:
        self.tickets = self._fakes = FakeTickets(self._tables)
        return self

    async def _write(self, events: Sequence[Event]) -> Ticket | None:
        if self._fail_commit is not None:
            raise self._fail_commit
        change, self._fakes.staged = self._fakes.staged, None
        if change is None:
            return None
        self._tables.commits += 1
        written = change(self._tables)
        if written is not None:  # the events of a change that did not happen are not written
            self._tables.outbox.extend(events)
        return written
