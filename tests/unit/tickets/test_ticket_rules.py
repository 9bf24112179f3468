"""The ticket rules (idempotency, ownership, close, attachments) on an in-memory unit of work: no servers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from obstore.store import MemoryStore

from keel.core.cache import MemoryCache, NearCache
from keel.core.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from keel.core.events import dumps
from keel.core.signing import UrlSigner
from keel.core.storage.obstore_store import ObstoreObjectStore
from keel.tickets.idempotency import MemoryIdempotencyStore
from keel.tickets.schemas import TicketCreate, TicketEvents, TicketStatus
from keel.tickets.service import TicketService
from tests.unit.tickets.fakes import FakeUnitOfWork, Tables

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BODY = TicketCreate(title="Printer on fire", description="Third floor.")
OTHER_BODY = TicketCreate(title="Printer on fire", description="Fourth floor.")


class World:
    def __init__(self, max_attachment_bytes: int = 100) -> None:
        self.tables = Tables()
        self.fail_commit: Exception | None = None
        self.idempotency = MemoryIdempotencyStore()
        self.storage = ObstoreObjectStore(MemoryStore(), signer=UrlSigner("unit-test-secret"))
        self.service = TicketService(
            lambda: FakeUnitOfWork(self.tables, self.fail_commit),
            NearCache(MemoryCache(1000, name="unit-tickets")),
            self.idempotency,
            self.storage,
            max_attachment_bytes=max_attachment_bytes,
            clock=lambda: NOW,
        )


@pytest.fixture
def world() -> World:
    return World()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- create and idempotency ---------------------------------------------------------------------


async def test_create_writes_an_open_ticket_and_its_created_event_together(world: World) -> None:
    created = await world.service.create("ann", BODY, None, "req-1")

    assert not created.replayed
    ticket = created.ticket
    assert (ticket.status, ticket.created_by, ticket.created_at) == (TicketStatus.OPEN, "ann", NOW)
    assert world.tables.tickets == {ticket.id: ticket}
    [event] = world.tables.outbox
    assert (event.event_type, event.key) == (TicketEvents.CREATED, ticket.id)
    assert event.payload == {
        "ticket_id": ticket.id,
        "created_by": "ann",
        "title": BODY.title,
        "request_id": "req-1",
    }


async def test_same_key_and_body_replays_the_first_ticket_once(world: World) -> None:
    first = await world.service.create("ann", BODY, "k1", None)
    again = await world.service.create("ann", BODY, " k1 ", None)  # surrounding blanks are not part of a key

    assert again.replayed and again.ticket == first.ticket
    assert len(world.tables.tickets) == 1 and len(world.tables.outbox) == 1


async def test_same_key_with_another_body_is_422(world: World) -> None:
    await world.service.create("ann", BODY, "k1", None)
    with pytest.raises(Unprocessable):
        await world.service.create("ann", OTHER_BODY, "k1", None)
    assert len(world.tables.tickets) == 1


async def test_keys_belong_to_their_user(world: World) -> None:
    mine = await world.service.create("ann", BODY, "k1", None)
    theirs = await world.service.create("bob", BODY, "k1", None)
    assert not theirs.replayed and theirs.ticket.id != mine.ticket.id


async def test_same_key_while_the_first_request_runs_is_409(world: World) -> None:
    await _reserve_like_a_running_request(world, "ann", "k1", BODY)
    with pytest.raises(Conflict):
        await world.service.create("ann", BODY, "k1", None)
    assert world.tables.tickets == {}


async def test_other_body_while_the_first_request_runs_is_422(world: World) -> None:
    await _reserve_like_a_running_request(world, "ann", "k1", BODY)
    with pytest.raises(Unprocessable):
        await world.service.create("ann", OTHER_BODY, "k1", None)


async def test_a_reservation_whose_completion_was_lost_replays_the_durable_record(world: World) -> None:
    first = await world.service.create("ann", BODY, "k1", None)
    await _reserve_like_a_running_request(world, "ann", "k1", BODY, forget_first=True)

    again = await world.service.create("ann", BODY, "k1", None)

    assert again.replayed and again.ticket == first.ticket
    assert len(world.tables.outbox) == 1


async def test_a_key_the_fast_path_forgot_is_answered_by_the_durable_record(world: World) -> None:
    first = await world.service.create("ann", BODY, "k1", None)
    await world.idempotency.release("ann", "k1")  # evicted from Redis, or Redis was down

    again = await world.service.create("ann", BODY, "k1", None)

    assert again.replayed and again.ticket == first.ticket
    assert len(world.tables.tickets) == 1 and len(world.tables.outbox) == 1
    with pytest.raises(Unprocessable):  # and the record is back on the fast path
        await world.service.create("ann", OTHER_BODY, "k1", None)


async def test_a_failed_create_frees_its_key_for_the_retry(world: World) -> None:
    world.fail_commit = ConnectionError("database went away")
    with pytest.raises(ConnectionError):
        await world.service.create("ann", BODY, "k1", None)
    assert world.tables.tickets == {} and world.tables.outbox == []

    world.fail_commit = None
    retried = await world.service.create("ann", BODY, "k1", None)
    assert not retried.replayed and list(world.tables.tickets) == [retried.ticket.id]


@pytest.mark.parametrize("key", ["", "   ", "k" * 201])
async def test_a_blank_or_overlong_key_is_422(world: World, key: str) -> None:
    with pytest.raises(Unprocessable):
        await world.service.create("ann", BODY, key, None)
    assert world.tables.tickets == {}


async def _reserve_like_a_running_request(
    world: World, user: str, key: str, body: TicketCreate, *, forget_first: bool = False
) -> None:
    """Put the key in the fast path as a request still in flight would have left it."""
    request_hash = hashlib.sha256(dumps(body.model_dump())).hexdigest()
    if forget_first:
        await world.idempotency.release(user, key)
    reservation = await world.idempotency.reserve(user, key, request_hash)
    assert reservation.state.value == "new"


# -- ownership ----------------------------------------------------------------------------------


async def test_a_ticket_is_visible_to_its_creator_only(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket

    assert await world.service.get("ann", ticket.id) == ticket
    with pytest.raises(Forbidden):
        await world.service.get("bob", ticket.id)


@pytest.mark.parametrize("ticket_id", [str(uuid.UUID(int=7)), "not-a-uuid"])
async def test_an_unknown_or_malformed_id_is_404(world: World, ticket_id: str) -> None:
    with pytest.raises(NotFound):
        await world.service.get("ann", ticket_id)
    with pytest.raises(NotFound):
        await world.service.close("ann", ticket_id, None)


async def test_the_list_holds_the_users_own_tickets(world: World) -> None:
    mine = (await world.service.create("ann", BODY, None, None)).ticket
    await world.service.create("bob", BODY, None, None)

    page = await world.service.list_tickets("ann", None, 50, 0)

    assert [t["id"] for t in orjson.loads(page.json)] == [mine.id]


# -- close --------------------------------------------------------------------------------------


async def test_closing_twice_answers_the_closed_ticket_and_emits_one_event(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket

    first = await world.service.close("ann", ticket.id, "req-2")
    second = await world.service.close("ann", ticket.id, "req-3")

    assert first.status is TicketStatus.CLOSED and second == first
    closed = [e for e in world.tables.outbox if e.event_type == TicketEvents.CLOSED]
    assert [e.payload["request_id"] for e in closed] == ["req-2"]


async def test_closing_another_users_ticket_is_403_and_changes_nothing(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket

    with pytest.raises(Forbidden):
        await world.service.close("bob", ticket.id, None)

    assert world.tables.tickets[ticket.id].status is TicketStatus.OPEN
    assert [e.event_type for e in world.tables.outbox] == [TicketEvents.CREATED]


async def test_closing_refreshes_the_cached_list(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket
    await world.service.list_tickets("ann", TicketStatus.OPEN, 50, 0)

    await world.service.close("ann", ticket.id, None)

    assert (await world.service.list_tickets("ann", TicketStatus.OPEN, 50, 0)).json == b"[]"


# -- attachments --------------------------------------------------------------------------------


async def test_an_attachment_keeps_its_size_and_digest_and_gets_a_link(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket

    attachment = await world.service.add_attachment(
        "ann", ticket.id, "a.txt", "text/plain", _chunks(b"ab", b"c")
    )

    assert (attachment.size_bytes, attachment.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    assert attachment.download_url and attachment.url_expires_in == world.service.link_ttl_s
    assert await world.service.list_attachments("ann", ticket.id) == [attachment]


async def test_an_attachment_at_the_limit_is_taken_and_one_byte_more_is_413_and_stores_nothing() -> None:
    world = World(max_attachment_bytes=4)
    ticket = (await world.service.create("ann", BODY, None, None)).ticket

    await world.service.add_attachment("ann", ticket.id, "ok", "text/plain", _chunks(b"ab", b"cd"))
    with pytest.raises(PayloadTooLarge):
        await world.service.add_attachment("ann", ticket.id, "big", "text/plain", _chunks(b"abc", b"de"))

    assert [a.filename for a in world.tables.attachments] == ["ok"]
    assert await _stored_keys(world) == [world.tables.attachments[0].storage_key]


async def test_a_closed_ticket_takes_no_attachment(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket
    await world.service.close("ann", ticket.id, None)

    with pytest.raises(Conflict):
        await world.service.add_attachment("ann", ticket.id, "a.txt", "text/plain", _chunks(b"a"))
    assert world.tables.attachments == [] and await _stored_keys(world) == []


async def test_another_users_ticket_takes_no_attachment(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket
    with pytest.raises(Forbidden):
        await world.service.add_attachment("bob", ticket.id, "a.txt", "text/plain", _chunks(b"a"))
    with pytest.raises(Forbidden):
        await world.service.list_attachments("bob", ticket.id)


async def test_bytes_stored_before_a_failed_row_write_are_deleted(world: World) -> None:
    ticket = (await world.service.create("ann", BODY, None, None)).ticket
    world.fail_commit = ConnectionError("database went away")

    with pytest.raises(ConnectionError):
        await world.service.add_attachment("ann", ticket.id, "a.txt", "text/plain", _chunks(b"a"))

    assert world.tables.attachments == [] and await _stored_keys(world) == []


async def _stored_keys(world: World) -> list[str]:
    """Every object under `tickets/`: one a row does not name would be an orphan."""
    store = world.storage._store  # the memory store behind the port: listing is not part of the port
    return sorted(o["path"] for batch in store.list("tickets/") for o in batch)
