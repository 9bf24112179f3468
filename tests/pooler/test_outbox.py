"""The outbox relay through PgBouncer, publishing to the real broker: its claims hold advisory
transaction locks (per shard), which a pooler in transaction mode keeps for exactly the transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest_asyncio

from keel.core.db import Database
from keel.core.events import Event
from keel.core.outbox import Outbox, OutboxRelay
from tests.integration.outbox.conftest import (  # noqa: F401 - fixtures
    Broker,
    kafka_bus,
    new_relay,
    outbox,
    running,
    settings,
)
from tests.integration.outbox.test_outbox_relay import (  # noqa: F401 - run here through PgBouncer
    test_notifying_writer_wakes_a_listening_relay_in_another_connection,
    test_relay_publishes_both_wire_formats_with_their_fields,
    test_relay_publishes_every_row_once_and_deletes_it,
    test_row_committed_after_a_higher_id_was_published_is_still_published,
    test_two_relays_publish_a_backlog_exactly_once_in_key_order,
)
from tests.support.servers import ChildServer, through


@pytest_asyncio.fixture
async def broker(kafka_brokers: list[str]) -> AsyncIterator[Broker]:
    """The real broker only (the integration suite also runs the relay on the memory bus)."""
    bus = kafka_bus(kafka_brokers)
    yield Broker(bus, "kafka")
    await bus.close()


async def test_with_no_direct_dsn_to_listen_on_the_relay_polls_and_publishes(
    fresh_pg_dsn: str,
    pgbouncer: ChildServer,
    broker: Broker,
    outbox: Outbox,  # noqa: F811 - the imported fixture
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],  # noqa: F811 - the imported fixture
):
    db = Database.connect(through(pgbouncer, fresh_pg_dsn), pool_size=5, pooler="pgbouncer")
    name = topic("route.confirmed")
    relay = new_relay(db, await broker.producer())
    log = await broker.log(name)
    try:
        async with running(relay):
            async with db.unit_of_work() as uow:
                await outbox.add(uow, Event("route.confirmed", {"route_id": "r"}, key="r"), name, "bare")
                await uow.commit()
            [message] = await log.read(1, within_s=5.0)
            assert not relay.listening
        assert message.key == b"r"
    finally:
        await log.close()
        await db.dispose()
