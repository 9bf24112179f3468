"""How the platform wires the ticket service: its routes, topics, consumer and rate limiter."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from fastapi import APIRouter

from keel.core.batching import GroupCommit
from keel.core.cache import Cache, NearCache, RedisCache
from keel.core.cache.recent import RecentPages
from keel.core.consumer import ConsumerOptions, ConsumerRunner
from keel.core.infra import Infra
from keel.core.ratelimit import RateLimiter, shared_storage
from keel.core.service import ServiceSpec, Wiring
from keel.tickets.api import PREFIXES, build_router, create_fast_routes, list_fast_routes
from keel.tickets.handlers import NOTIFICATIONS
from keel.tickets.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    completion,
    redis_completion,
)
from keel.tickets.repository import Creates, create_many
from keel.tickets.schemas import TicketEvents
from keel.tickets.service import TicketService
from keel.tickets.settings import TicketSettings
from keel.tickets.unit_of_work import PgTicketUnitOfWork

NOTIFICATIONS_GROUP = "tickets-notifications"
TITLE = "Ticket service"

DESCRIPTION = """Tickets (seed 002), served under `/v1/tickets` and, as the seed writes them, `/tickets`.

* **Identity**: every business route needs `X-User-Id` (401 when missing or blank).
* **Access**: a ticket is visible only to the user who created it. Another user's ticket (and its
  attachments) answers **403** — it exists, but is not yours; an unknown or malformed id answers **404**.
* **Validation**: `title` 3..200 and `description` 1..5000 characters, counted after trimming
  surrounding whitespace (which is removed from the stored values).
* **Quotas**: `ATTACHMENTS_PER_TICKET` (20) attachments per ticket and `ATTACHMENT_BYTES_PER_USER`
  (500 MiB) of attachments per user; past either, **409** `quota_exceeded`.
* **Idempotency-Key** (optional, per user, 1 h): a repeat with the same body answers the first
  response again with `Idempotent-Replayed: true`; the same key with another body is 422; the same key
  while the first request is still running is 409.
* **Close** is idempotent: closing a closed ticket answers 200 again and emits no second `ticket.closed`.
* **Events**: `ticket.created` / `ticket.closed` on `tickets.events` (envelope in the value, key = ticket id),
  written in the same transaction as the change (transactional outbox).
* **Errors**: `{"error": {"code", "message", "request_id"}}`; 429 carries `Retry-After`.
"""


def _service(infra: Infra, settings: TicketSettings) -> TicketService:
    db = infra.require_db()
    shards, wake = infra.settings.outbox_shards, infra.wake_relay

    # Concurrent creates of this process go to PostgreSQL together (keel.core.batching).
    creates: Creates = GroupCommit("ticket-creates", functools.partial(create_many, db))

    def unit_of_work() -> PgTicketUnitOfWork:
        return PgTicketUnitOfWork(db, outbox_shards=shards, wake=wake, creates=creates)

    # Both on the process's Redis client when there is one: a create then records its key and
    # invalidates its lists in one round trip.
    shared: Cache
    idempotency: IdempotencyStore
    if infra.redis is not None:
        redis_cache, redis_store = RedisCache(infra.redis, name="tickets"), RedisIdempotencyStore(infra.redis)
        shared, idempotency = redis_cache, redis_store
        complete_key = redis_completion(redis_cache, redis_store)
    else:
        shared, idempotency = infra.cache("tickets"), MemoryIdempotencyStore()
        complete_key = completion(shared, idempotency)
    return TicketService(
        unit_of_work,
        NearCache(shared, RecentPages("tickets-pages")),
        idempotency,
        infra.storage,
        complete_key=complete_key,
        link_ttl_s=settings.attachment_link_ttl_s,
        max_attachment_bytes=settings.max_attachment_bytes,
        attachments_per_ticket=settings.attachments_per_ticket,
        attachment_bytes_per_user=settings.attachment_bytes_per_user,
    )


async def _wire(infra: Infra, settings: TicketSettings) -> Wiring:
    infra.signer.allow_ttl(settings.attachment_link_ttl_s)  # attachment links (local storage)
    service = _service(infra, settings)
    wiring = Wiring(state={"tickets": service})
    limiter = None
    if settings.tickets_rate_limit:
        limiter = RateLimiter(settings.tickets_rate_limit, shared_storage(infra.settings), name="tickets")
        wiring.state["tickets_rate_limiter"] = limiter
    # One code path: the fast routes answer with or without a limit, and count against it.
    wiring.fast_routes = [
        *list_fast_routes(service, infra.authenticator, limiter),
        *create_fast_routes(service, infra.authenticator, limiter, infra.settings.max_body_bytes),
    ]
    notifications = ConsumerRunner(
        infra.bus,
        group_id=NOTIFICATIONS_GROUP,
        topics=[TicketEvents.TOPIC],
        wire="envelope",
        handler=NOTIFICATIONS,
        db=infra.require_db(),
        dlq_topic=TicketEvents.DLQ,
        options=ConsumerOptions.from_settings(infra.settings),
    )
    wiring.workers.append(notifications)
    return wiring


def build_spec(settings: TicketSettings) -> ServiceSpec:
    """The service on `settings` (read once per process by `SPEC.configured()`, or given by a test)."""

    def routers() -> Sequence[APIRouter]:
        limit, rate_limited = settings.max_attachment_bytes, bool(settings.tickets_rate_limit)
        return [build_router(p, max_upload_bytes=limit, rate_limited=rate_limited) for p in PREFIXES]

    async def wire(infra: Infra) -> Wiring:
        return await _wire(infra, settings)

    return ServiceSpec(
        name="tickets",
        title=TITLE,
        routers=routers,
        wire=wire,
        topics=(TicketEvents.TOPIC, TicketEvents.DLQ),
        uses_outbox=True,
        uses_storage=True,
        description=DESCRIPTION,
        # The multipart envelope adds a little to the file itself.
        max_body_bytes=settings.max_attachment_bytes + 64 * 1024,
    )


# Only a name until a process is built from it: the settings are read then, once (ServiceSpec.configured).
SPEC = ServiceSpec.deferred("tickets", TITLE, lambda: build_spec(TicketSettings()))
