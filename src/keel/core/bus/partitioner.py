"""Kafka's default partitioner, as the producers and the memory bus use it: murmur2 of the key.

Why not aiokafka's own: its `murmur2` handles the key a byte at a time in Python, a third of what
the outbox relay spent per record (docs/design-decisions.md, with the figure). This one reads the
key as little-endian 32-bit words in one `struct` call; the result is the same number for every key
(`tests/unit/test_partitioner.py` holds it to aiokafka's and to the Java client's test vectors), so a
key lands on the partition any Kafka client would pick.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Sequence


@functools.lru_cache(maxsize=64)
def _words(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


def murmur2(data: bytes) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2, as an unsigned 32-bit value (aiokafka's form)."""
    length = len(data)
    h = 0x9747B28C ^ length  # the seed
    m = 0x5BD1E995
    for k in _words(length >> 2).unpack_from(data):
        k = k * m & 0xFFFFFFFF
        # Java's `h *= m; h ^= k` with k = (k ^ k >>> 24) * m: masked once, since (a ^ b) & M is
        # (a & M) ^ (b & M).
        h = (h * m ^ (k ^ k >> 24) * m) & 0xFFFFFFFF
    whole = length & ~3
    tail = length - whole
    if tail:
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h = (h ^ data[whole]) * m & 0xFFFFFFFF
    h ^= h >> 13
    h = h * m & 0xFFFFFFFF
    return h ^ h >> 15


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a keyed record among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def default_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's `partitioner` callable: the key's partition, or any available one for no key."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[partition_of(key, len(all_partitions))]
