"""How the platform wires the order service: the ingest consumer, the cache and its warm-up, routes."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Sequence

from fastapi import APIRouter

from keel.core.consumer import ConsumerOptions, ConsumerRunner
from keel.core.infra import Infra, ensure_topics
from keel.core.ratelimit import RateLimiter, address_of, memory_storage, shared_storage
from keel.core.service import ServiceSpec, Wiring, Worker
from keel.orders.access import OrderAccess
from keel.orders.api import order_fast_route, order_router, page_router
from keel.orders.cache import OrderCache
from keel.orders.handlers import ingest_handler
from keel.orders.invalidation import CacheInvalidation
from keel.orders.schemas import ORDER_EVENT
from keel.orders.service import OrderService
from keel.orders.settings import OrderSettings

log = logging.getLogger("keel.orders")

TITLE = "Order service"
DESCRIPTION = """Orders (seed 004): consumes the bare order JSON from `KAFKA_TOPIC` (default `orders`, group
`KAFKA_GROUP_ID`, default `order-svc`), validates it strictly and upserts it into `orders`, `deliveries`,
`payments` and `items` in batches. Invalid messages go to `<topic>.dlq` with the reason in `dlq-*` headers.

* `GET /order/{order_uid}`: the order in the model's shape; `X-Source: cache|db`, `X-Duration-ms`;
  `?nocache=1` reads the database. The cache is in process memory (LRU, `ORDER_CACHE_SIZE`), warmed at
  start with the most recently written orders (`ORDER_CACHE_WARM`), off with `CACHE_ENABLED=0`.
* Who may read (`ORDERS_AUTH`): `none` (default) answers anyone who names the uid — the seed's public
  lookup page; `user` answers only the caller whose id is the order's `customer_id` (another customer's
  order is 404, as an unknown one). Lookups that find nothing count per client address against
  `ORDER_MISS_LIMIT` (429 with `Retry-After` past it); with `user`, every lookup counts per user
  against `ORDER_LOOKUP_LIMIT`. See docs/security.md.
* `/`: a page to look an order up.
"""


def build_spec(settings: OrderSettings | None = None) -> ServiceSpec:
    """The service on `settings`, read once per process by `SPEC.configured()` unless given."""
    chosen = settings or OrderSettings()

    def routers() -> Sequence[APIRouter]:
        return [order_router(chosen.orders_auth), page_router()]

    async def wire_service(infra: Infra) -> Wiring:
        # A process built on the order service's own settings (a test's topics) uses those.
        own = infra.settings if isinstance(infra.settings, OrderSettings) else chosen
        return await wire(infra, own)

    return ServiceSpec(
        name="orders",
        title=TITLE,
        routers=routers,
        wire=wire_service,
        # As configured (KAFKA_TOPIC) when the process starts.
        topics=(chosen.kafka_topic, chosen.dlq_topic),
        description=DESCRIPTION,
    )


async def wire(infra: Infra, settings: OrderSettings) -> Wiring:
    db = infra.require_db()
    # A replica's cache is only as fresh as its LISTEN feed of the others' writes: with no direct DSN
    # to listen on (behind a pooler), every read goes to PostgreSQL rather than risk a stale order.
    cached = settings.cache_enabled and db.listen_dsn is not None
    cache = OrderCache(settings.order_cache_size) if cached else None
    sender = secrets.token_hex(8)
    service = OrderService(db, cache, sender=sender)
    workers: list[Worker] = []
    if not settings.cache_enabled:
        log.info("order cache off (CACHE_ENABLED=0)")
    elif cache is None:
        log.warning(
            "order cache off: DB_POOLER=%s and no POSTGRES_LISTEN_DSN to hear other replicas' writes on; "
            "set it to a direct PostgreSQL DSN to turn the cache on",
            settings.db_pooler,
        )
    else:
        # Other replicas' writes evict this one's cached orders; the cache is warmed, and serves,
        # once that feed is listening (keel.orders.invalidation).
        warm = functools.partial(service.warm, settings.order_cache_warm)
        fresh = CacheInvalidation(db, cache, sender=sender, warm=warm)
        await fresh.open()
        workers.append(fresh)
    # The topics follow settings (KAFKA_TOPIC), so they are created here rather than listed in the spec.
    await ensure_topics(infra.bus, [settings.kafka_topic, settings.dlq_topic])
    runner = ConsumerRunner(
        infra.bus,
        group_id=settings.kafka_group_id,
        topics=[settings.kafka_topic],
        wire="bare",
        handler=ingest_handler(service),
        db=db,
        dlq_topic=settings.dlq_topic,
        default_event_type=ORDER_EVENT,
        name="orders-ingest",
        options=ConsumerOptions.from_settings(infra.settings, batch_size=settings.order_batch_size),
    )
    access = order_access(settings, infra)
    return Wiring(
        state={"orders": service, "order_access": access},
        workers=[*workers, runner],
        fast_routes=[order_fast_route(service, access, infra.authenticator)],
    )


def order_access(settings: OrderSettings, infra: Infra) -> OrderAccess:
    misses = settings.order_miss_limit
    per_user = settings.order_lookup_limit if settings.orders_auth == "user" else ""
    return OrderAccess(
        settings.orders_auth,
        # Per address in process memory, like the signed-link budget (keel.core.ratelimit.ClientLimits).
        misses=RateLimiter(misses, memory_storage(), name="order-misses", key=address_of) if misses else None,
        per_user=RateLimiter(per_user, shared_storage(infra.settings), name="order-lookups")
        if per_user
        else None,
    )


# Only a name until a process is built from it: the settings are read then, once (ServiceSpec.configured).
SPEC = ServiceSpec.deferred("orders", TITLE, build_spec)
