"""Keel's partitioner puts every key where any Kafka client would: the Java client's murmur2 test
vectors, and aiokafka's own function over keys of every length up to a few hundred bytes."""

from __future__ import annotations

import random
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from keel.core.bus.partitioner import default_partitioner, murmur2, partition_of

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed 32-bit, as Java returns them).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS.items())
def test_murmur2_gives_the_java_clients_values(key: bytes, expected: int):
    assert signed(murmur2(key)) == expected


def test_murmur2_agrees_with_aiokafka_for_keys_of_every_length():
    rng = random.Random(7)
    keys = [rng.randbytes(length) for length in range(300) for _ in range(20)]
    keys += [b"\xff" * n for n in range(12)] + [str(uuid.uuid4()).encode() for _ in range(200)]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]


def test_a_keyed_record_goes_to_aiokafkas_partition_for_any_partition_count():
    rng = random.Random(11)
    for count in (1, 2, 3, 6, 12, 100):
        partitions = list(range(count))
        for _ in range(200):
            key = rng.randbytes(rng.randrange(1, 64))
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert default_partitioner(key, partitions, partitions) == expected == partition_of(key, count)


def test_a_record_without_a_key_goes_to_an_available_partition_or_else_any():
    assert {default_partitioner(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {default_partitioner(None, [0, 1, 2, 3], []) for _ in range(200)} == {0, 1, 2, 3}
