"""Ticket creates share statements (group commit): concurrent creates through the app are written in
batches, each answered with its own ticket and event; within one batch a key taken twice writes one
ticket, and a ticket whose key was taken writes nothing, its event neither."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
from prometheus_client import REGISTRY

from keel.core.outbox import outbox_row
from keel.tickets.model import IdempotencyRecord, Ticket, created_event
from keel.tickets.repository import PendingCreate, create_many
from keel.tickets.schemas import TicketEvents
from tests.integration.tickets.conftest import ticket_body


def batch_sizes() -> tuple[float, float]:
    labels = {"batch": "ticket-creates"}
    count = REGISTRY.get_sample_value("group_commit_batch_size_count", labels) or 0.0
    total = REGISTRY.get_sample_value("group_commit_batch_size_sum", labels) or 0.0
    return count, total


async def test_concurrent_creates_are_written_in_shared_statements(api_client, as_user, fresh_pg_dsn) -> None:
    batches_before, items_before = batch_sizes()
    responses = await asyncio.gather(
        *(
            api_client.post(
                "/v1/tickets",
                json=ticket_body(title=f"ticket {n}"),
                headers=as_user(**{"Idempotency-Key": f"k{n}"}),
            )
            for n in range(64)
        )
    )
    assert [r.status_code for r in responses] == [201] * 64
    ids = [r.json()["id"] for r in responses]
    assert [r.json()["title"] for r in responses] == [f"ticket {n}" for n in range(64)]
    batches, items = batch_sizes()
    assert items - items_before == 64
    assert batches - batches_before < 64, "no two creates shared a statement"
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        tickets = await conn.fetchval("SELECT count(*) FROM tickets WHERE id = ANY($1::uuid[])", ids)
        events = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE key = ANY($1::text[])", ids)
    finally:
        await conn.close()
    assert tickets == events == 64
    print(f"\ngroup commit: 64 concurrent creates in {batches - batches_before:.0f} statements")


def pending(user: str, key: str | None) -> PendingCreate:
    ticket = Ticket.open(str(uuid.uuid4()), "title", "description", user, datetime.now(UTC))
    record = (key, IdempotencyRecord("hash", b'{"id": "%s"}' % ticket.id.encode())) if key else None
    return PendingCreate(ticket, record, outbox_row(created_event(ticket, None), TicketEvents.TOPIC, 16))


async def test_in_one_batch_a_key_taken_twice_writes_one_ticket_and_one_event(
    api_only_app, fresh_pg_dsn
) -> None:
    user = f"u-{uuid.uuid4().hex[:6]}"
    batch = [pending(user, "same"), pending(user, "same"), pending(user, None), pending(user, "other")]
    written = await create_many(api_only_app.state.infra.require_db(), batch)
    assert written == [True, False, True, True]
    again = await create_many(api_only_app.state.infra.require_db(), [pending(user, "other")])
    assert again == [False]  # a key taken by an earlier batch
    ids = [p.ticket.id for p in batch]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        stored = {r[0] for r in await conn.fetch("SELECT id::text FROM tickets WHERE created_by = $1", user)}
        keyed = await conn.fetch(
            "SELECT events.key FROM outbox_events events WHERE key = ANY($1::text[])", ids
        )
        owner = await conn.fetchval(
            "SELECT ticket_id::text FROM ticket_idempotency WHERE user_id = $1 AND key = 'same'", user
        )
    finally:
        await conn.close()
    assert stored == {ids[0], ids[2], ids[3]}
    assert sorted(r[0] for r in keyed) == sorted([ids[0], ids[2], ids[3]])
    assert owner == ids[0]
