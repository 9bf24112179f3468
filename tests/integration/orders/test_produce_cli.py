"""`keel orders produce`: random valid orders (and malformed ones on request) on the real broker."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import orjson

from keel.orders.schemas import InvalidOrder, parse_order
from tests.support.topic_log import KafkaTopicLog


async def keel(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


def is_valid(value: bytes | None) -> bool:
    try:
        data = orjson.loads(value or b"")
        parse_order(data)
    except (orjson.JSONDecodeError, InvalidOrder, TypeError, AttributeError):
        return False
    return True


async def test_produce_publishes_valid_orders_and_the_requested_share_of_bad_ones(kafka_brokers, topic):
    name = topic("orders")
    code, output = await keel(
        "orders",
        "produce",
        "-n",
        "40",
        "--interval",
        "0",
        "--bad-rate",
        "0.3",
        "--seed",
        "11",
        "--topic",
        name,
        env={"KAFKA_BROKERS": ",".join(kafka_brokers), "KAFKA_IDEMPOTENCE": "false"},
    )
    assert code == 0, output
    good, bad = map(int, re.search(r"published (\d+) orders and (\d+) malformed", output).groups())
    assert good + bad == 40 and 0 < bad < 40

    log = await KafkaTopicLog(kafka_brokers, name).open()
    try:
        records = await log.read(40)
        assert await log.size() == 40
    finally:
        await log.close()
    valid = [r for r in records if is_valid(r.value)]
    assert len(valid) == good
    for record in valid:
        order = orjson.loads(record.value)
        assert record.key == order["order_uid"].encode()
        assert record.header("event-id") and record.header("event-type") == b"order"


async def test_produce_without_brokers_says_so_and_fails():
    code, output = await keel("orders", "produce", "-n", "1", env={"KAFKA_BROKERS": ""})
    assert code == 2
    assert "no brokers" in output
