"""The consumer runner every service uses, and the handler kinds it runs.

A service wires one runner per consumer group in its wiring function and hands it to the supervisor::

    async def notify(event: Event, uow: UnitOfWork) -> None: ...       # effect in uow's transaction

    runner = ConsumerRunner(
        infra.bus,
        group_id="tickets-notifications",
        topics=["tickets.events"],
        wire="envelope",
        handler=Transactional(notify),
        db=infra.db,
        dlq_topic="tickets.dlq",
        options=ConsumerOptions.from_settings(settings),  # retries, batch size, timeouts
    )
    wiring.workers.append(runner)

Bare-wire topics fed by outside producers name a natural key for messages without `event-id`:
`Transactional(upsert_order, natural_key=lambda e: e.payload["order_uid"])`. Ingest-heavy consumers
take `Batch(upsert_orders)` (`async def upsert_orders(events, uow)`); effects idempotent by
themselves (a Redis overwrite) take `Idempotent(handle)` and need no database; stateless workers that
publish a result per record take `IdempotentBatch(handle_batch)` (`async def handle_batch(events)`). A handler raises
`PoisonMessage` for input no retry can fix (its own schema check): it is dead-lettered at once.
"""

from keel.core.consumer.dlq import dead_letter_record
from keel.core.consumer.handlers import Batch, Handler, Idempotent, IdempotentBatch, Transactional
from keel.core.consumer.retry import RetryPolicy, is_transient
from keel.core.consumer.runner import ConsumerOptions, ConsumerRunner

__all__ = [
    "Batch",
    "ConsumerOptions",
    "ConsumerRunner",
    "Handler",
    "Idempotent",
    "IdempotentBatch",
    "RetryPolicy",
    "Transactional",
    "dead_letter_record",
    "is_transient",
]
