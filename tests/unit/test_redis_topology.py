"""REDIS_URL's three forms, and the one-line errors of the ones that cannot work."""

from __future__ import annotations

import re

import pytest

from keel.core.redis_topology import RedisTopology, hash_tagged
from keel.core.settings import Settings


def test_one_server_is_the_url_as_redis_py_reads_it() -> None:
    topology = RedisTopology.parse("redis://:pw@cache:6379/2")
    assert (topology.kind, topology.limits_uri()) == ("server", "async+redis://:pw@cache:6379/2")


def test_sentinels_name_their_hosts_service_and_database() -> None:
    topology = RedisTopology.parse(
        "redis+sentinel://app:s%40cret@s1:26379,s2:26380,[::1]:26381/keel-primary/3"
    )
    assert topology.kind == "sentinel"
    assert topology.nodes == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert (topology.service, topology.db, topology.username, topology.password) == (
        "keel-primary",
        3,
        "app",
        "s@cret",
    )
    assert "s@cret" not in repr(topology)
    assert (
        topology.limits_uri()
        == "async+redis+sentinel://app:s%40cret@s1:26379,s2:26380,[::1]:26381/keel-primary"
    )


def test_a_cluster_is_its_seed_nodes() -> None:
    topology = RedisTopology.parse("redis+cluster://n1:7000,n2:7001")
    assert (topology.kind, topology.nodes, topology.db) == ("cluster", (("n1", 7000), ("n2", 7001)), 0)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("memcached://x:1", "use redis://, rediss://, redis+sentinel:// or redis+cluster://"),
        ("redis+sentinel://s1:26379", "needs the service name"),
        ("redis+cluster://", "names no host:port"),
        ("redis+cluster://n1", "expected host:port"),
    ],
)
def test_settings_refuse_a_redis_url_that_cannot_work(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        Settings.model_validate({"REDIS_URL": url})


def test_hash_tags_keep_a_namespace_in_one_slot() -> None:
    assert hash_tagged("keel:cache:tickets:") == "{keel:cache:tickets}:"
    assert hash_tagged("keel:{tickets}:") == "keel:{tickets}:"
    assert hash_tagged("odd:{}:") == "{odd:{}}:"  # an empty tag is no tag
