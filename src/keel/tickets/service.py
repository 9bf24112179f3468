"""Ticket use cases. Route handlers call these; they take every dependency as a constructor argument."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel.core.cache import Cache, RedisCache
from keel.core.cache.recent import RecentPages
from keel.core.db import Database
from keel.core.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, QuotaExceeded, Unprocessable
from keel.core.events import dumps
from keel.core.outbox import shard_for
from keel.core.outbox.writer import headers_json
from keel.core.storage import ObjectStore
from keel.core.telemetry import trace_headers
from keel.tickets import repository
from keel.tickets.idempotency import IdempotencyStore, RedisIdempotencyStore, State
from keel.tickets.schemas import TicketCreate, TicketEvents, TicketStatus

LIST_TTL_S = 60
MAX_IDEMPOTENCY_KEY = 200


@dataclass(frozen=True, slots=True)
class Created:
    status_code: int
    body: bytes
    replayed: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_id(ticket_id: str) -> str | None:
    try:
        return str(uuid.UUID(ticket_id))
    except ValueError:
        return None


def ticket_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "description": row["description"],
        "status": row["status"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def list_page(status: TicketStatus | None, limit: int, offset: int) -> str:
    return f"{status.value if status else 'all'}-{limit}-{offset}"


def list_key(user: str, page: str) -> str:
    # The page is one segment: every separator adds a generation the cache reads on each hit, and
    # only the user's prefix is ever invalidated.
    return f"tickets:list:{user}:{page}"


def _user_prefix(user: str) -> str:
    return f"tickets:list:{user}:"


class TicketService:
    def __init__(
        self,
        db: Database,
        cache: Cache,
        idempotency: IdempotencyStore,
        storage: ObjectStore,
        *,
        outbox_shards: int,
        link_ttl_s: int = 900,
        max_attachment_bytes: int = 10 * 1024 * 1024,
        attachments_per_ticket: int = 20,
        attachment_bytes_per_user: int = 500 * 1024 * 1024,
        clock: Callable[[], datetime] = _now,
        on_event_written: Callable[[], None] = lambda: None,
        recent_pages: RecentPages | None = None,
    ) -> None:
        self.db = db
        self.cache = cache
        self.idempotency = idempotency
        self.storage = storage
        self.outbox_shards = outbox_shards
        self.link_ttl_s = link_ttl_s
        self.max_attachment_bytes = max_attachment_bytes
        self.attachments_per_ticket = attachments_per_ticket
        self.attachment_bytes_per_user = attachment_bytes_per_user
        self.clock = clock
        # Wakes an in-process outbox relay so the event goes out now rather than at its next poll.
        self.on_event_written = on_event_written
        self.recent_pages = recent_pages or RecentPages("tickets-pages")

    def _event(self, ticket_id: str, event_type: str, payload: dict[str, Any]) -> repository.OutboxFields:
        return repository.OutboxFields(
            event_id=str(uuid.uuid4()),
            topic=TicketEvents.TOPIC,
            event_type=event_type,
            payload_json=dumps(payload).decode(),
            headers_json=headers_json(trace_headers()),
            shard=shard_for(ticket_id, self.outbox_shards),
        )

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
                return self._replay(
                    request_hash, reservation.request_hash, reservation.status_code, reservation.response
                )
            if reservation.state is State.IN_FLIGHT:
                if reservation.request_hash != request_hash:
                    raise Unprocessable("Idempotency-Key was already used with a different request body")
                # A reservation whose completion never reached Redis (its reply or the write lost,
                # a crash after the commit) would answer 409 for its whole TTL: ask PostgreSQL.
                async with self.db.connection() as conn:
                    record = await conn.fetchrow(repository.IDEMPOTENCY_RECORD, user, key)
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
        now = self.clock()
        ticket_id = str(uuid.uuid4())
        ticket = {
            "id": ticket_id,
            "title": data.title,
            "description": data.description,
            "status": TicketStatus.OPEN.value,
            "created_by": user,
            "created_at": now,
            "updated_at": now,
        }
        body = dumps(ticket)
        event = self._event(
            ticket_id,
            TicketEvents.CREATED,
            {"ticket_id": ticket_id, "created_by": user, "title": data.title, "request_id": request_id},
        )
        idempotency = (key, request_hash, body.decode()) if key is not None else None
        async with self.db.connection() as conn:
            created = await repository.create(
                conn,
                ticket_id=ticket_id,
                title=data.title,
                description=data.description,
                user=user,
                now=now,
                outbox=event,
                idempotency=idempotency,
            )
            if not created:
                # The key existed in PostgreSQL although the fast path did not know it (evicted, or
                # Redis down): the durable record decides.
                record = await conn.fetchrow(repository.IDEMPOTENCY_RECORD, user, key)
        if not created:
            # Only a keyed create can find its key taken.
            assert record is not None and key is not None
            return await self._replay_durable(user, key, request_hash, record)
        self.on_event_written()
        await self._created(user, key, request_hash, body)
        return Created(201, body, replayed=False)

    async def _replay_durable(self, user: str, key: str, request_hash: str, record: Any) -> Created:
        """Answer a key from its durable record, and put the record back on the fast path."""
        replay = self._replay(
            request_hash, record["request_hash"], record["status_code"], record["response"].encode()
        )
        await self.idempotency.complete(user, key, record["request_hash"], replay.status_code, replay.body)
        return replay

    @staticmethod
    def _replay(
        request_hash: str, stored_hash: str | None, status_code: int, response: bytes | None
    ) -> Created:
        if stored_hash != request_hash or response is None:
            raise Unprocessable("Idempotency-Key was already used with a different request body")
        return Created(status_code, response, replayed=True)

    # -- read ---------------------------------------------------------------------------------

    async def _owned_row(self, user: str, ticket_id: str) -> Any:
        parsed = _parse_id(ticket_id)
        if parsed is None:
            raise NotFound("ticket not found")
        async with self.db.connection() as conn:
            row = await conn.fetchrow(repository.GET, parsed)
        if row is None:
            raise NotFound("ticket not found")
        if row["created_by"] != user:
            raise Forbidden("this ticket belongs to another user")
        return row

    async def get(self, user: str, ticket_id: str) -> dict[str, Any]:
        return ticket_json(await self._owned_row(user, ticket_id))

    async def list_tickets(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> bytes:
        async def load() -> bytes:
            async with self.db.connection() as conn:
                if status is None:
                    rows = await conn.fetch(repository.LIST_ALL, user, limit, offset)
                else:
                    rows = await conn.fetch(repository.LIST_BY_STATUS, user, limit, offset, status.value)
            return dumps([ticket_json(r) for r in rows])

        page = list_page(status, limit, offset)
        recent = self.recent_pages.get(user, page)
        if recent is not None:
            return recent
        version = self.recent_pages.version(user)
        body = await self.cache.get_or_load(list_key(user, page), load, LIST_TTL_S)
        self.recent_pages.put(user, page, body, version)
        return body

    def recent_page(self, user: str, status: TicketStatus | None, limit: int, offset: int) -> bytes | None:
        """The page if this process served it a moment ago (see `RecentPages`), without any I/O."""
        return self.recent_pages.get(user, list_page(status, limit, offset))

    async def _invalidate_lists(self, user: str) -> None:
        await self.cache.delete_prefix(_user_prefix(user))
        # After the shared cache: a page loaded from it before its invalidation is refused here, one
        # loaded after is fresh.
        self.recent_pages.forget(user)

    async def _created(self, user: str, key: str | None, request_hash: str, body: bytes) -> None:
        """The user's lists invalidated, then the key recorded as done: one Redis round trip when
        the cache and the idempotency store share a client."""
        cache, store = self.cache, self.idempotency
        if (
            key is not None
            and isinstance(cache, RedisCache)
            and isinstance(store, RedisIdempotencyStore)
            and cache.client is store.client
        ):
            done = store.complete_command(user, key, request_hash, 201, body)
            await cache.delete_prefix(_user_prefix(user), also=[done])
            self.recent_pages.forget(user)
            return
        await self._invalidate_lists(user)
        if key is not None:
            await store.complete(user, key, request_hash, 201, body)

    # -- close --------------------------------------------------------------------------------

    async def close(self, user: str, ticket_id: str, request_id: str | None) -> dict[str, Any]:
        parsed = _parse_id(ticket_id)
        if parsed is None:
            raise NotFound("ticket not found")
        now = self.clock()
        event = self._event(
            parsed,
            TicketEvents.CLOSED,
            {"ticket_id": parsed, "created_by": user, "closed_at": now, "request_id": request_id},
        )
        async with self.db.connection() as conn:
            row = await repository.close(conn, ticket_id=parsed, user=user, now=now, outbox=event)
        if row is None:
            # Unknown, someone else's, or already closed (closing twice is 200 and emits nothing).
            return await self.get(user, parsed)
        self.on_event_written()
        await self._invalidate_lists(user)
        return ticket_json(row)

    # -- attachments --------------------------------------------------------------------------

    async def add_attachment(
        self, user: str, ticket_id: str, filename: str, content_type: str, chunks: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        row = await self._owned_row(user, ticket_id)
        if row["status"] == TicketStatus.CLOSED.value:
            # A closed ticket is finished business: what is attached to it stays as it was closed.
            raise Conflict("the ticket is CLOSED: attachments are accepted on OPEN tickets only")
        room = await self._attachment_room(row["id"], user)
        attachment_id = str(uuid.uuid4())
        storage_key = f"tickets/{row['id']}/{attachment_id}"
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
        now = self.clock()
        try:
            async with self.db.connection() as conn:
                await conn.execute(
                    repository.INSERT_ATTACHMENT,
                    attachment_id,
                    row["id"],
                    filename,
                    content_type,
                    size,
                    digest.hexdigest(),
                    storage_key,
                    user,
                    now,
                )
        except BaseException:
            await self.storage.delete(storage_key)  # no orphaned bytes without metadata
            raise
        return await self._attachment_json(
            {
                "id": attachment_id,
                "ticket_id": row["id"],
                "filename": filename,
                "content_type": content_type,
                "size_bytes": size,
                "sha256": digest.hexdigest(),
                "storage_key": storage_key,
                "created_at": now,
            }
        )

    async def _attachment_room(self, ticket_id: str, user: str) -> int:
        """The bytes `user` may still upload to this ticket, or QuotaExceeded (409). Checked before the
        upload; two uploads at once may each fit alone and overshoot the byte quota by one file."""
        async with self.db.connection() as conn:
            usage = await conn.fetchrow(repository.ATTACHMENT_USAGE, ticket_id, user)
        if usage["on_ticket"] >= self.attachments_per_ticket:
            raise QuotaExceeded(
                f"the ticket holds {self.attachments_per_ticket} attachments (ATTACHMENTS_PER_TICKET)"
            )
        room: int = self.attachment_bytes_per_user - usage["user_bytes"]
        if room <= 0:
            raise QuotaExceeded(self._bytes_quota_message())
        return room

    def _bytes_quota_message(self) -> str:
        return f"your attachments would exceed {self.attachment_bytes_per_user} bytes (ATTACHMENT_BYTES_PER_USER)"

    async def list_attachments(self, user: str, ticket_id: str) -> list[dict[str, Any]]:
        row = await self._owned_row(user, ticket_id)
        async with self.db.connection() as conn:
            rows = await conn.fetch(repository.LIST_ATTACHMENTS, row["id"])
        return [await self._attachment_json(dict(r)) for r in rows]

    async def _attachment_json(self, row: dict[str, Any]) -> dict[str, Any]:
        url = await self.storage.download_url(row["storage_key"], self.link_ttl_s)
        out = {k: v for k, v in row.items() if k != "storage_key"}
        out.update(download_url=url, url_expires_in=self.link_ttl_s)
        return out
