"""The harness itself: every fixture yields a server that answers."""

import asyncpg
from aiokafka import AIOKafkaProducer


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


async def test_broker_accepts_a_record(kafka_brokers, topic):
    producer = AIOKafkaProducer(bootstrap_servers=kafka_brokers, acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic("harness"), b"x", key=b"k")
        assert metadata.offset >= 0
    finally:
        await producer.stop()
