"""The ingest consumer of `KAFKA_TOPIC`: a batch of bare order messages → validated orders → one
transaction. An invalid order is poison: the runner redoes the batch one message at a time and
dead-letters that one with the reason, and the others are stored.

Inbox id. Outside producers send no `event-id`, so the runner needs a natural key. `order_uid`
alone would be wrong: an updated order keeps its order_uid and would be skipped as "already
handled". The message's position (topic:partition:offset) would be wrong too: offsets start again
when a topic is recreated, and new orders would be skipped as old ones. The key is therefore a hash
of the order's content: a redelivery or a byte-for-byte resend is skipped without touching the four
tables, an update (other content) is applied, and a stale duplicate arriving after an update does not
roll the order back (the price: a deliberate revert to byte-identical earlier content is skipped too;
a producer that means it changes any field, or sends an `event-id`). The upsert is idempotent in any case, so the inbox saves work and keeps the
stream's newest state; it is not what prevents duplicate rows. A message that does carry `event-id`
(our own producer) is known by that id, as everywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson

from keel.core.consumer import Batch
from keel.core.db import UnitOfWork
from keel.core.events import Event, PoisonMessage
from keel.core.faults import crash_point
from keel.orders.schemas import InvalidOrder, Order, parse_order
from keel.orders.service import OrderService


def content_key(event: Event) -> str:
    # Sorted keys: the same order with its fields in another order or other spacing is the same order.
    canonical = orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS)
    return f"order-sha256:{hashlib.sha256(canonical).hexdigest()}"


def to_order(event: Event) -> Order:
    try:
        return parse_order(event.payload)
    except InvalidOrder as exc:
        raise PoisonMessage(str(exc)) from None


def ingest_handler(service: OrderService) -> Batch:
    async def ingest(events: Sequence[Event], uow: UnitOfWork) -> None:
        await service.save([to_order(event) for event in events], uow)
        crash_point("orders.mid_batch")  # rows written, transaction still open: a kill loses nothing

    return Batch(ingest, natural_key=content_key)
