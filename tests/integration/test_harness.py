"""The harness itself: every fixture yields a server that answers."""

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError

from tests.support.eventually import eventually
from tests.support.servers import broker_kind


async def test_postgres_database_is_migrated(db):
    async with db.unit_of_work() as uow:
        assert await (await uow.raw()).fetchval("SELECT count(*) FROM outbox_events") == 0


async def test_fresh_databases_are_isolated(pg_dsn, fresh_pg_dsn):
    assert pg_dsn != fresh_pg_dsn
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM processed_events") == 0
    finally:
        await conn.close()


async def test_redis_answers(redis_client, key_prefix):
    await redis_client.set(f"{key_prefix}k", "v", ex=10)
    assert await redis_client.get(f"{key_prefix}k") == b"v"


async def test_broker_accepts_a_record_on_a_topic_made_for_it_and_makes_none_by_itself(kafka_brokers, topic):
    """The test brokers run as docs/kafka.md asks of production (auto.create.topics.enable=false): a
    topic nobody created is refused, so a Keel path that forgot to create its topic fails here too."""
    made, unknown = topic("harness"), topic("never-created")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_brokers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(made, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_brokers, acks="all", request_timeout_ms=2000)
    await producer.start()
    try:
        metadata = await eventually(
            lambda: producer.send_and_wait(made, b"x", key=b"k"),
            until=lambda m: m.offset >= 0,
            retry_on=(KafkaError,),
            timeout_s=30,
            what="the new topic served",
        )
        assert metadata.offset >= 0
        if broker_kind() == "kafka":  # the setting is the Apache Kafka harness's (tests.support.apache_kafka)
            with pytest.raises((UnknownTopicOrPartitionError, KafkaTimeoutError)):
                await producer.send_and_wait(unknown, b"x", key=b"k")
    finally:
        await producer.stop()
