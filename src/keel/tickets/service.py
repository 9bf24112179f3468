"""Ticket use cases. They take every dependency as a constructor argument, write through a unit of
work, and return domain results (a ticket, a page, a replay flag): the edge (api.py) makes HTTP of them."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson

from keel.core.cache import Cache, NearCache
from keel.core.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, QuotaExceeded, Unprocessable
from keel.core.events import dumps
from keel.core.storage import ObjectStore
from keel.tickets.idempotency import Completion, IdempotencyStore, State, completion
from keel.tickets.model import (
    Attachment,
    Created,
    IdempotencyRecord,
    Page,
    StoredAttachment,
    Ticket,
    closed_event,
    created_event,
)
from keel.tickets.schemas import TicketCreate, TicketStatus
from keel.tickets.unit_of_work import TicketUnitOfWork, UnitOfWorkFactory

LIST_TTL_S = 60
MAX_IDEMPOTENCY_KEY = 200
CREATED = 201  # what the idempotency records hold: a key's first answer is always a create


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_id(ticket_id: str) -> str | None:
    try:
        return str(uuid.UUID(ticket_id))
    except ValueError:
        return None


def list_page(status: TicketStatus | None, limit: int, offset: int) -> str:
    return f"{status.value if status else 'all'}-{limit}-{offset}"


def list_key(user: str, page: str) -> str:
    # The page is one segment: every separator adds a generation the cache reads on each hit, and
    # only the user's prefix is ever invalidated.
    return f"tickets:list:{user}:{page}"


def _user_prefix(user: str) -> str:
    return f"tickets:list:{user}:"


def _replay(request_hash: str, record: IdempotencyRecord) -> Created:
    if record.request_hash != request_hash:
        raise Unprocessable("Idempotency-Key was already used with a different request body")
    return Created(Ticket.from_json(orjson.loads(record.response)), replayed=True)


class TicketService:
    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory,
        lists: NearCache[Cache],
        idempotency: IdempotencyStore,
        storage: ObjectStore,
        *,
        complete_key: Completion | None = None,
        link_ttl_s: int = 900,
        max_attachment_bytes: int = 10 * 1024 * 1024,
        attachments_per_ticket: int = 20,
        attachment_bytes_per_user: int = 500 * 1024 * 1024,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """`lists`: the users' list pages. `complete_key`: how a create records its key as done along
        with its lists' invalidation (by default one after the other)."""
        self.unit_of_work = unit_of_work
        self.lists = lists
        self.idempotency = idempotency
        self.complete_key = complete_key or completion(lists.shared, idempotency)
        self.storage = storage
        self.link_ttl_s = link_ttl_s
        self.max_attachment_bytes = max_attachment_bytes
        self.attachments_per_ticket = attachments_per_ticket
        self.attachment_bytes_per_user = attachment_bytes_per_user
        self.clock = clock

    # -- create -------------------------------------------------------------------------------

    async def create(
        self, user: str, data: TicketCreate, idempotency_key: str | None, request_id: str | None
    ) -> Created:
        key = idempotency_key.strip() if idempotency_key is not None else None
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise Unprocessable(f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} characters")
        request_hash = hashlib.sha256(dumps(data.model_dump())).hexdigest()
        reserved = False
        if key is not None:
            reservation = await self.idempotency.reserve(user, key, request_hash)
            if reservation.state is State.DONE:
                assert reservation.request_hash is not None and reservation.response is not None
                return _replay(
                    request_hash, IdempotencyRecord(reservation.request_hash, reservation.response)
                )
            if reservation.state is State.IN_FLIGHT:
                if reservation.request_hash != request_hash:
                    raise Unprocessable("Idempotency-Key was already used with a different request body")
                # A reservation whose completion never reached Redis (its reply or the write lost,
                # a crash after the commit) would answer 409 for its whole TTL: ask PostgreSQL.
                async with self.unit_of_work() as uow:
                    record = await uow.tickets.idempotency_record(user, key)
                if record is not None:
                    return await self._replay_durable(user, key, request_hash, record)
                raise Conflict("a request with this Idempotency-Key is still in progress")
            reserved = reservation.state is State.NEW
        try:
            return await self._insert(user, data, key, request_hash, request_id)
        except BaseException:
            if reserved:
                await self.idempotency.release(user, key)  # type: ignore[arg-type]
            raise

    async def _insert(
        self, user: str, data: TicketCreate, key: str | None, request_hash: str, request_id: str | None
    ) -> Created:
        ticket = Ticket.open(str(uuid.uuid4()), data.title, data.description, user, self.clock())
        record = idempotency = None
        if key is not None:
            # The key's durable record holds the ticket as first answered, for replays.
            record = IdempotencyRecord(request_hash, dumps(ticket))
            idempotency = (key, record)
        async with self.unit_of_work() as uow:
            uow.tickets.add(ticket, idempotency)
            uow.collect(created_event(ticket, request_id))
            if await uow.commit() is None:
                # Only a keyed create can find its key taken: it existed in PostgreSQL although the
                # fast path did not know it (evicted, or Redis down). The durable record decides.
                assert key is not None
                durable = await uow.tickets.idempotency_record(user, key)
                assert durable is not None
                return await self._replay_durable(user, key, request_hash, durable)
        await self._created(user, key, record)
        return Created(ticket)

    async def _replay_durable(
        self, user: str, key: str, request_hash: str, record: IdempotencyRecord
    ) -> Created:
        """Answer a key from its durable record, and put the record back on the fast path."""
        replay = _replay(request_hash, record)
        await self.idempotency.complete(user, key, record.request_hash, CREATED, record.response)
        return replay

    # -- read ---------------------------------------------------------------------------------

    @staticmethod
    async def _owned(uow: TicketUnitOfWork, user: str, ticket_id: str) -> Ticket:
        parsed = _parse_id(ticket_id)
        ticket = None if parsed is None else await uow.tickets.get(parsed)
        if ticket is None:
            raise NotFound("ticket not found")
        if ticket.created_by != user:
            raise Forbidden("this ticket belongs to another user")
        return ticket

    async def get(self, user: str, ticket_id: str) -> Ticket:
        async with self.unit_of_work() as uow:
            return await self._owned(uow, user, ticket_id)

    async def list_tickets(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> Page:
        async def load() -> bytes:
            async with self.unit_of_work() as uow:
                return dumps(await uow.tickets.owned_by(user, status, limit, offset))

        return Page(
            await self.lists.get_or_load(list_key(user, list_page(status, limit, offset)), load, LIST_TTL_S)
        )

    def recent_page(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> Page | None:
        """The page if this process served it a moment ago (the near cache), without any I/O."""
        body = self.lists.peek(list_key(user, list_page(status, limit, offset)))
        return None if body is None else Page(body)

    async def _created(self, user: str, key: str | None, record: IdempotencyRecord | None) -> None:
        """The user's lists invalidated, then the key recorded as done (one Redis round trip when
        the spec wired a Redis completion)."""
        prefix = _user_prefix(user)
        if key is None or record is None:
            await self.lists.invalidate(prefix)
            return
        done = self.complete_key(prefix, user, key, record.request_hash, CREATED, record.response)
        await self.lists.invalidate(prefix, shared=done)

    # -- close --------------------------------------------------------------------------------

    async def close(self, user: str, ticket_id: str, request_id: str | None) -> Ticket:
        """Closing a closed ticket changes nothing and emits no second `ticket.closed`."""
        parsed = _parse_id(ticket_id)
        if parsed is None:
            raise NotFound("ticket not found")
        now = self.clock()
        async with self.unit_of_work() as uow:
            uow.tickets.close(parsed, user, now)
            uow.collect(closed_event(parsed, user, now, request_id))
            closed = await uow.commit()
            if closed is None:
                # Unknown, someone else's, or already closed: answered as a read of it.
                return await self._owned(uow, user, parsed)
        await self.lists.invalidate(_user_prefix(user))
        return closed

    # -- attachments --------------------------------------------------------------------------

    async def add_attachment(
        self, user: str, ticket_id: str, filename: str, content_type: str, chunks: AsyncIterator[bytes]
    ) -> Attachment:
        async with self.unit_of_work() as uow:
            ticket = await self._owned(uow, user, ticket_id)
            if ticket.status is TicketStatus.CLOSED:
                # A closed ticket is finished business: what is attached to it stays as it was closed.
                raise Conflict("the ticket is CLOSED: attachments are accepted on OPEN tickets only")
            room = self._attachment_room(*await uow.tickets.attachment_usage(ticket.id, user))
        attachment_id = str(uuid.uuid4())
        storage_key = f"tickets/{ticket.id}/{attachment_id}"
        digest = hashlib.sha256()
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_attachment_bytes:
                    raise PayloadTooLarge(f"attachment is larger than {self.max_attachment_bytes} bytes")
                if size > room:
                    raise QuotaExceeded(self._bytes_quota_message())
                digest.update(chunk)
                yield chunk

        await self.storage.put(storage_key, counted(), content_type=content_type, filename=filename)
        stored = StoredAttachment(
            attachment_id,
            ticket.id,
            filename,
            content_type,
            size,
            digest.hexdigest(),
            storage_key,
            self.clock(),
        )
        try:
            async with self.unit_of_work() as uow:
                uow.tickets.add_attachment(stored, user)
                await uow.commit()
        except BaseException:
            await self.storage.delete(storage_key)  # no orphaned bytes without metadata
            raise
        return await self._linked(stored)

    def _attachment_room(self, on_ticket: int, user_bytes: int) -> int:
        """The bytes the caller may still upload, or QuotaExceeded (409). Checked before the upload;
        two uploads at once may each fit alone and overshoot the byte quota by one file."""
        if on_ticket >= self.attachments_per_ticket:
            raise QuotaExceeded(
                f"the ticket holds {self.attachments_per_ticket} attachments (ATTACHMENTS_PER_TICKET)"
            )
        room = self.attachment_bytes_per_user - user_bytes
        if room <= 0:
            raise QuotaExceeded(self._bytes_quota_message())
        return room

    def _bytes_quota_message(self) -> str:
        return f"your attachments would exceed {self.attachment_bytes_per_user} bytes (ATTACHMENT_BYTES_PER_USER)"

    async def list_attachments(self, user: str, ticket_id: str) -> list[Attachment]:
        async with self.unit_of_work() as uow:
            ticket = await self._owned(uow, user, ticket_id)
            stored = await uow.tickets.attachments(ticket.id)
        return [await self._linked(a) for a in stored]

    async def _linked(self, a: StoredAttachment) -> Attachment:
        url = await self.storage.download_url(a.storage_key, self.link_ttl_s)
        return Attachment(
            a.id,
            a.ticket_id,
            a.filename,
            a.content_type,
            a.size_bytes,
            a.sha256,
            a.created_at,
            url,
            self.link_ttl_s,
        )
