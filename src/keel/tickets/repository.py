"""The ticket service's SQL. Hot paths are single statements on the raw asyncpg connection:
a data-modifying CTE writes the ticket, its outbox row and its idempotency record atomically in one
round trip, so there is no window between them and nothing to roll back by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

TICKET_COLUMNS = "id::text, title, description, status, created_by, created_at, updated_at"


def _outbox_insert(first: int, source: str, now: str) -> str:
    """Insert the outbox row from parameters $first..$first+5, for each row of `source`."""
    p = [f"${first + i}" for i in range(6)]
    return f"""
    INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, headers, shard, created_at)
    SELECT {p[0]}::uuid, {p[1]}, $1::text, {p[2]}, 'envelope', {p[3]}::jsonb, {p[4]}::jsonb, {p[5]}, {now}
    FROM {source}"""


# $1 id, $2 title, $3 description, $4 user, $5 now, $6..$11 the outbox row.
CREATE = f"""
WITH t AS (
    INSERT INTO tickets (id, title, description, status, created_by, created_at, updated_at)
    VALUES ($1::uuid, $2, $3, 'OPEN', $4, $5, $5)
    RETURNING id
), o AS ({_outbox_insert(6, "t", "$5")} RETURNING 1)
SELECT count(*) FROM o
"""

# With an Idempotency-Key ($6 key, $7 request hash, $8 response) the ticket exists only if its key
# was new: the idempotency insert gates the ticket insert, which gates the outbox insert.
# 0 rows back means the key was taken and nothing was written.
CREATE_IDEMPOTENT = f"""
WITH k AS (
    INSERT INTO ticket_idempotency (user_id, key, request_hash, ticket_id, status_code, response)
    VALUES ($4, $6, $7, $1::uuid, 201, $8::jsonb)
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING ticket_id
), t AS (
    INSERT INTO tickets (id, title, description, status, created_by, created_at, updated_at)
    SELECT $1::uuid, $2, $3, 'OPEN', $4, $5, $5 FROM k
    RETURNING id
), o AS ({_outbox_insert(9, "t", "$5")} RETURNING 1)
SELECT count(*) FROM o
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
# What the quotas count before an upload: the ticket's attachments, and the uploader's bytes.
ATTACHMENT_USAGE = """
SELECT (SELECT count(*) FROM attachments WHERE ticket_id = $1::uuid) AS on_ticket,
       (SELECT coalesce(sum(size_bytes), 0) FROM attachments WHERE uploaded_by = $2)::bigint AS user_bytes
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


@dataclass(frozen=True, slots=True)
class OutboxFields:
    """The outbox row that travels with a write (six parameters of the statements above)."""

    event_id: str
    topic: str
    event_type: str
    payload_json: str
    headers_json: str
    shard: int

    def params(self) -> tuple[Any, ...]:
        return (self.event_id, self.topic, self.event_type, self.payload_json, self.headers_json, self.shard)


async def create(
    conn: asyncpg.Connection,
    *,
    ticket_id: str,
    title: str,
    description: str,
    user: str,
    now: datetime,
    outbox: OutboxFields,
    idempotency: tuple[str, str, str] | None,
) -> bool:
    """Insert the ticket and its event; with `(key, request_hash, response_json)` only if the key is new.
    Returns False when the key already existed (nothing was written)."""
    if idempotency is None:
        count = await conn.fetchval(CREATE, ticket_id, title, description, user, now, *outbox.params())
    else:
        count = await conn.fetchval(
            CREATE_IDEMPOTENT, ticket_id, title, description, user, now, *idempotency, *outbox.params()
        )
    return bool(count)


async def close(
    conn: asyncpg.Connection, *, ticket_id: str, user: str, now: datetime, outbox: OutboxFields
) -> asyncpg.Record | None:
    """The closed ticket, or None when nothing changed (unknown, someone else's, or already closed)."""
    row: asyncpg.Record | None = await conn.fetchrow(CLOSE, ticket_id, user, now, *outbox.params())
    return row
