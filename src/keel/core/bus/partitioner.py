"""Kafka's default partitioner, as the producers and the memory bus use it: murmur2 of the key.

Why not aiokafka's own: its `murmur2` handles the key a byte at a time in Python, a third of what the
outbox relay spent per record. Kafka's murmur2 is the standard 32-bit MurmurHash2 with the seed
0x9747b28c, which `murmurhash2` computes in compiled code (docs/design-decisions.md, with the
figures); `tests/unit/test_partitioner.py` holds it to the Java client's test vectors and to
aiokafka's function over keys of every length, so a key lands on the partition any Kafka client
would pick.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from murmurhash2 import murmurhash2

SEED = 0x9747B28C  # org.apache.kafka.common.utils.Utils.murmur2's


def murmur2(data: bytes) -> int:
    """org.apache.kafka.common.utils.Utils.murmur2, as an unsigned 32-bit value (aiokafka's form)."""
    return murmurhash2(data, SEED)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a keyed record among `partitions`."""
    return (murmurhash2(key, SEED) & 0x7FFFFFFF) % partitions


def default_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's `partitioner` callable: the key's partition, or any available one for no key."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[partition_of(key, len(all_partitions))]
