"""A partition waiting for a retry holds only itself: other partitions keep flowing, and later
messages of the held partition wait behind the one being retried."""

from __future__ import annotations

import random

from keel.core.bus import Bus
from keel.core.consumer import ConsumerOptions, ConsumerRunner, RetryPolicy, Transactional
from keel.core.db import Database
from tests.integration.consumer.conftest import PARTITIONS, event_record, running, unique
from tests.integration.consumer.script import Effects, Script
from tests.support.bus import keys_on_distinct_partitions, started_producer
from tests.support.eventually import eventually

# Seeded so the first backoff draw is 0.956 of the cap: full jitter may pick any wait in [0, cap],
# and this test needs one long enough to observe the other partition flowing inside it.
JITTER_SEED = 2
BACKOFF_S = 4.0


async def test_message_on_another_partition_is_handled_while_a_partition_is_in_backoff(
    bus: Bus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic = unique("held")
    key_a, key_b = (k.decode() for k in keys_on_distinct_partitions(2, PARTITIONS, prefix=unique("k")))
    runner = ConsumerRunner(
        bus,
        group_id=unique("held-group"),
        topics=[topic],
        wire="envelope",
        handler=Transactional(script.handle),
        db=db,
        dlq_topic=unique("held.dlq"),
        rng=random.Random(JITTER_SEED),
        options=ConsumerOptions(retry=RetryPolicy(max_attempts=10, base_s=BACKOFF_S, max_s=BACKOFF_S)),
    )
    await bus.ensure_topics([topic])
    async with started_producer(bus) as producer, running(runner):
        await producer.send(event_record(topic, "a", key=key_a, fail=10))

        async def failures_of_a() -> int:
            return len(script.failed_at.get("a", []))

        await eventually(failures_of_a, until=lambda n: n == 1, timeout_s=20, what="first failure of a")
        failed_at = script.failed_at["a"][0]

        await producer.send(event_record(topic, "b", key=key_b))
        await effects.wait_for("b")

        flowed_after_s = script.applied_at["b"] - failed_at
        # B was handled inside A's backoff, and A was not tried again meanwhile (no hot loop).
        assert flowed_after_s < 0.9 * BACKOFF_S
        assert script.calls["a"] == 1
        print(f"partition B handled {flowed_after_s * 1000:.0f} ms after partition A went into backoff")


async def test_later_messages_of_a_retrying_partition_wait_behind_it(
    bus: Bus, db: Database, effects: Effects
) -> None:
    script = Script()
    topic = unique("ordered")
    runner = ConsumerRunner(
        bus,
        group_id=unique("ordered-group"),
        topics=[topic],
        wire="envelope",
        handler=Transactional(script.handle),
        db=db,
        dlq_topic=unique("ordered.dlq"),
        options=ConsumerOptions(retry=RetryPolicy(max_attempts=5, base_s=0.05, max_s=0.1)),
    )
    await bus.ensure_topics([topic])
    async with started_producer(bus) as producer, running(runner):
        await producer.send(event_record(topic, "first", key="same", fail=2))
        for n in range(5):
            await producer.send(event_record(topic, f"later-{n}", key="same"))

        await effects.wait_for("later-4")

        assert script.applied == ["first", *(f"later-{n}" for n in range(5))]
        assert script.calls["first"] == 3
        assert all(script.calls[f"later-{n}"] == 1 for n in range(5))
