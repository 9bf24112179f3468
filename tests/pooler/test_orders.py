"""The order service through PgBouncer: Kafka → validation → PostgreSQL → cache → GET /order/{id}."""

from __future__ import annotations

import logging
import random

import pytest

from keel.core.bus import Producer
from keel.orders.fake import fake_order
from tests.integration.orders.conftest import (  # noqa: F401 - fixtures
    MakeSettings,
    order_settings,
    producer,
    quick_group_joins,
    rng,
    send,
    served,
    serving,
)
from tests.integration.orders.test_ingest import (  # noqa: F401 - run here through PgBouncer
    test_a_stale_copy_of_an_older_version_does_not_roll_an_update_back,
    test_an_order_and_its_update_in_one_batch_end_as_the_update,
    test_an_updated_order_replaces_its_items_and_details,
    test_produced_order_is_served_identical_from_cache_then_from_db,
    test_the_same_order_sent_twice_leaves_one_set_of_rows,
)


async def test_with_no_direct_dsn_to_listen_on_every_order_is_read_from_the_database(
    order_settings: MakeSettings,  # noqa: F811 - the imported fixture
    producer: Producer,  # noqa: F811 - the imported fixture
    rng: random.Random,  # noqa: F811 - the imported fixture
    caplog: pytest.LogCaptureFixture,
):
    # Its cache could not hear other replicas' writes: it stays off rather than serve a stale order.
    settings = order_settings(postgres_listen_dsn=None)
    order = fake_order(rng)
    with caplog.at_level(logging.INFO):
        async with serving(settings) as (_, client):
            await send(producer, settings.kafka_topic, [order])
            first = await served(client, order["order_uid"])
            again = await client.get(f"/order/{order['order_uid']}")
    assert first.headers["X-Source"] == again.headers["X-Source"] == "db"
    said = [r.getMessage() for r in caplog.records if r.name in ("keel.orders", "keel.infra")]
    # Each choice is one line at start (docs/production.md): no LISTEN, and the order cache off.
    assert len([m for m in said if "nothing LISTENs" in m and "polls every" in m]) == 1, said
    assert len([m for m in said if "POSTGRES_LISTEN_DSN" in m and "nothing LISTENs" not in m]) == 1, said
