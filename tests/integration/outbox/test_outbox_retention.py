"""Retention: published rows older than the configured age go, in batches; nothing else does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from keel.core.db import Database
from keel.core.outbox import Outbox, OutboxRetention, purge_published
from tests.integration.outbox.conftest import make_events, write_events
from tests.support.eventually import eventually


async def _age_rows(db: Database, event_ids: list[str], *, published_hours_ago: float | None) -> None:
    async with db.unit_of_work() as uow:
        await (await uow.raw()).execute(
            "UPDATE outbox_events SET created_at = now() - interval '3 days',"
            " published_at = now() - make_interval(secs => $2)"
            " WHERE event_id = ANY($1::uuid[])",
            event_ids,
            None if published_hours_ago is None else published_hours_ago * 3600,
        )
        await uow.commit()


async def _remaining(db: Database) -> set[str]:
    async with db.unit_of_work() as uow:
        rows = await (await uow.raw()).fetch("SELECT event_id::text FROM outbox_events")
    return {r["event_id"] for r in rows}


async def test_purge_deletes_only_published_rows_older_than_the_age_in_batches(
    db: Database, outbox: Outbox, topic: Callable[[str], str]
):
    old, recent, pending = make_events(23, keys=3), make_events(4, keys=2), make_events(5, keys=2)
    await write_events(db, outbox, old + recent + pending, topic("orders"))
    await _age_rows(db, [e.event_id for e in old], published_hours_ago=48)
    await _age_rows(db, [e.event_id for e in recent], published_hours_ago=1)
    await _age_rows(db, [e.event_id for e in pending], published_hours_ago=None)  # old but unpublished

    deleted = await purge_published(db, older_than_s=24 * 3600, batch_size=5)

    assert deleted == len(old)
    assert await _remaining(db) == {e.event_id for e in recent + pending}
    assert await purge_published(db, older_than_s=24 * 3600, batch_size=5) == 0


async def test_retention_worker_purges_at_start_and_stops_when_asked(
    db: Database, outbox: Outbox, topic: Callable[[str], str]
):
    old = make_events(12, keys=3)
    await write_events(db, outbox, old, topic("orders"))
    await _age_rows(db, [e.event_id for e in old], published_hours_ago=10)
    worker = OutboxRetention(db, max_age_s=3600, interval_s=3600, batch_size=4)

    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.deleted, until=lambda n: n == len(old), what="old rows purged")
    await worker.stop()
    await asyncio.wait_for(task, 5)

    assert await _remaining(db) == set()
