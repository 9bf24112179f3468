"""The ticket service's SQL and the repository that runs it (the only code that does).

A ticket change is one statement: a data-modifying CTE writes the ticket, its outbox row and its
idempotency record atomically in one round trip, so there is no window between them and nothing to
roll back by hand. The repository stages the change and the unit of work runs it at commit, with the
outbox row of the event it collected (keel.tickets.unit_of_work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from keel.core.batching import GroupCommit
from keel.core.db import Database
from keel.core.outbox import OutboxRow
from keel.tickets.model import IdempotencyRecord, StoredAttachment, Ticket
from keel.tickets.schemas import TicketStatus

TICKET_COLUMNS = "id::text, title, description, status, created_by, created_at, updated_at"


def _outbox_insert(first: int, source: str, now: str) -> str:
    """Insert the outbox row from parameters $first..$first+5, for each row of `source`. The event's key
    is the ticket id ($1) and its time the change's (`now`)."""
    p = [f"${first + i}" for i in range(6)]
    return f"""
    INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, headers, shard, created_at)
    SELECT {p[0]}::uuid, {p[1]}, $1::text, {p[2]}, 'envelope', {p[3]}::jsonb, {p[4]}::jsonb, {p[5]}, {now}
    FROM {source}"""


# Many creates in one statement (group commit, keel.core.batching): one array per column, rows zipped
# by position. A keyed row's ticket exists only if its key was new; every ticket written gets its
# outbox row, keyed by the ticket and dated by it. The ids written come back.
CREATE_MANY = """
WITH i AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
        $8::text[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int[]
    ) AS i(id, title, description, user_id, at, key, request_hash, response,
           event_id, topic, event_type, payload, headers, shard)
), k AS (
    INSERT INTO ticket_idempotency (user_id, key, request_hash, ticket_id, status_code, response)
    SELECT user_id, key, request_hash, id, 201, response::jsonb FROM i WHERE key IS NOT NULL
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING ticket_id
), t AS (
    INSERT INTO tickets (id, title, description, status, created_by, created_at, updated_at)
    SELECT id, title, description, 'OPEN', user_id, at, at FROM i
    WHERE key IS NULL OR id IN (SELECT ticket_id FROM k)
    RETURNING id
), o AS (
    INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, headers, shard, created_at)
    SELECT i.event_id, i.topic, i.id::text, i.event_type, 'envelope', i.payload::jsonb, i.headers::jsonb,
           i.shard, i.at
    FROM i JOIN t USING (id)
)
SELECT id::text FROM t
"""

IDEMPOTENCY_RECORD = """
SELECT request_hash, status_code, response::text FROM ticket_idempotency WHERE user_id = $1 AND key = $2
"""

GET = f"SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1::uuid"

LIST_ALL = f"""
SELECT {TICKET_COLUMNS} FROM tickets WHERE created_by = $1
ORDER BY created_at DESC LIMIT $2 OFFSET $3
"""
LIST_BY_STATUS = f"""
SELECT {TICKET_COLUMNS} FROM tickets WHERE created_by = $1 AND status = $4
ORDER BY created_at DESC LIMIT $2 OFFSET $3
"""

# $1 id, $2 user, $3 now, $4..$9 the outbox row. Only an OPEN ticket of this user changes;
# concurrent closes serialise on the row lock and the loser sees CLOSED, so exactly one
# `ticket.closed` is ever written.
CLOSE = f"""
WITH t AS (
    UPDATE tickets SET status = 'CLOSED', updated_at = $3
    WHERE id = $1::uuid AND created_by = $2 AND status = 'OPEN'
    RETURNING {TICKET_COLUMNS}
), o AS ({_outbox_insert(4, "t", "$3")})
SELECT * FROM t
"""

INSERT_ATTACHMENT = """
INSERT INTO attachments (id, ticket_id, filename, content_type, size_bytes, sha256, storage_key, uploaded_by, created_at)
VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9)
"""
ATTACHMENT_USAGE = """
SELECT (SELECT count(*) FROM attachments WHERE ticket_id = $1::uuid) AS on_ticket,
       coalesce((SELECT bytes FROM attachment_usage WHERE user_id = $2), 0)::bigint AS user_bytes
"""
LIST_ATTACHMENTS = """
SELECT id::text, ticket_id::text, filename, content_type, size_bytes, sha256, storage_key, created_at
FROM attachments WHERE ticket_id = $1::uuid ORDER BY created_at, id
"""

# One array per column, rows zipped by position: any number of notifications in one statement.
INSERT_NOTIFICATIONS = """
INSERT INTO notifications (event_id, ticket_id, user_id, kind, message)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (event_id) DO NOTHING
"""


def _ticket(row: Any) -> Ticket:
    return Ticket(
        row["id"],
        row["title"],
        row["description"],
        TicketStatus(row["status"]),
        row["created_by"],
        row["created_at"],
        row["updated_at"],
    )


def _outbox_params(row: OutboxRow) -> tuple[Any, ...]:
    """The six outbox parameters of the statements above."""
    return (row.event_id, row.topic, row.event_type, row.payload, row.headers, row.shard)


@dataclass(frozen=True, slots=True)
class PendingCreate:
    """One create of a group commit: the ticket, its key's record (keyed creates) and its outbox row."""

    ticket: Ticket
    idempotency: tuple[str, IdempotencyRecord] | None
    event: OutboxRow


async def create_many(db: Database, creates: Sequence[PendingCreate]) -> list[bool]:
    """Writes `creates` in one statement (one transaction); for each, whether its ticket was written
    (False: its key was taken, and nothing of it was written)."""
    columns: list[list[Any]] = [[] for _ in range(14)]
    for create in creates:
        t, e = create.ticket, create.event
        key, record = create.idempotency or (None, None)
        row = (
            *(t.id, t.title, t.description, t.created_by, t.created_at),
            *(key, record and record.request_hash, record and record.response.decode()),
            *(e.event_id, e.topic, e.event_type, e.payload, e.headers, e.shard),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    async with db.connection() as conn:
        written = {r[0] for r in await conn.fetch(CREATE_MANY, *columns)}
    return [c.ticket.id in written for c in creates]


Creates = GroupCommit[PendingCreate, bool]


@dataclass(frozen=True, slots=True)
class _Staged:
    statement: str
    params: tuple[Any, ...]
    ticket: Ticket | None = None  # what a create writes
    key: str | None = None  # a ticket change's id: its event must be keyed by it (None: no event)
    at: datetime | None = None  # and dated by the change
    idempotency: tuple[str, IdempotencyRecord] | None = None  # a create's key and its record


class PgTicketRepository:
    """Tickets, their idempotency records and attachments on one pooled connection (autocommit),
    taken when first needed. Reads run at once; a change is staged and runs when the unit of work
    commits: a create with the creates of other requests (group commit), anything else alone."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], creates: Creates) -> None:
        self._connect = connect
        self._creates = creates
        self._staged: _Staged | None = None

    async def get(self, ticket_id: str) -> Ticket | None:
        row = await (await self._connect()).fetchrow(GET, ticket_id)
        return None if row is None else _ticket(row)

    async def owned_by(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> list[Ticket]:
        if status is None:
            rows = await (await self._connect()).fetch(LIST_ALL, user, limit, offset)
        else:
            rows = await (await self._connect()).fetch(LIST_BY_STATUS, user, limit, offset, status.value)
        return [_ticket(r) for r in rows]

    async def idempotency_record(self, user: str, key: str) -> IdempotencyRecord | None:
        row = await (await self._connect()).fetchrow(IDEMPOTENCY_RECORD, user, key)
        return None if row is None else IdempotencyRecord(row["request_hash"], row["response"].encode())

    async def attachments(self, ticket_id: str) -> list[StoredAttachment]:
        return [
            StoredAttachment(**dict(r))
            for r in await (await self._connect()).fetch(LIST_ATTACHMENTS, ticket_id)
        ]

    async def attachment_usage(self, ticket_id: str, user: str) -> tuple[int, int]:
        """What the quotas count: the ticket's attachments, and the bytes `user` has uploaded."""
        row = await (await self._connect()).fetchrow(ATTACHMENT_USAGE, ticket_id, user)
        return int(row["on_ticket"]), int(row["user_bytes"])

    def add(self, ticket: Ticket, idempotency: tuple[str, IdempotencyRecord] | None) -> None:
        """Stage the new ticket; with `(key, record)` it is written only if the key is new."""
        self._stage(_Staged(CREATE_MANY, (), ticket, ticket.id, ticket.created_at, idempotency))

    def close(self, ticket_id: str, user: str, now: datetime) -> None:
        """Stage the close of an OPEN ticket of `user`; anything else is left as it is."""
        self._stage(_Staged(CLOSE, (ticket_id, user, now), None, ticket_id, now))

    def add_attachment(self, attachment: StoredAttachment, user: str) -> None:
        a = attachment
        params = (a.id, a.ticket_id, a.filename, a.content_type, a.size_bytes, a.sha256, a.storage_key, user)
        self._stage(_Staged(INSERT_ATTACHMENT, (*params, a.created_at)))

    def _stage(self, staged: _Staged) -> None:
        if self._staged is not None:
            raise RuntimeError("one change per unit of work: it is one statement")
        self._staged = staged

    async def write(self, events: Sequence[OutboxRow]) -> Ticket | None:
        """Run the staged change with the outbox row of its event, as one statement (one transaction).
        The written ticket; None when the change's condition did not hold and nothing was written."""
        staged, self._staged = self._staged, None
        if staged is None:
            if events:
                raise RuntimeError("events without a change to carry them")
            return None
        if staged.key is None:  # an attachment: no event
            if events:
                raise RuntimeError("an attachment carries no event")
            await (await self._connect()).execute(staged.statement, *staged.params)
            return None
        if len(events) != 1 or events[0].key != staged.key or events[0].created_at != staged.at:
            # The statement has room for one row keyed by the ticket, at the change's time.
            raise RuntimeError("a ticket change carries exactly one event, keyed by the ticket, at its time")
        if staged.statement == CLOSE:
            conn = await self._connect()
            row = await conn.fetchrow(CLOSE, *staged.params, *_outbox_params(events[0]))
            return None if row is None else _ticket(row)
        assert staged.ticket is not None
        written = await self._creates.submit(PendingCreate(staged.ticket, staged.idempotency, events[0]))
        return staged.ticket if written else None
