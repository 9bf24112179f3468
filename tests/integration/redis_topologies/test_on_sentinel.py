"""Under three Sentinels watching a primary and its replica, every one of them requiring a password:
the cache contract, rate limits shared by instances, the tickets service's idempotency keys and list
cache, and the delivery pages, each client finding the primary through the Sentinels with the URL's
credentials. Then what production.md promises of Sentinels: the credentials reach both the Sentinels
and the primary, limit counters are read from the primary only, writes follow a planned failover
without a restart (whether the old primary is demoted by Sentinel, which closes its clients'
connections, or otherwise, when it answers READONLY), and the rate limiter fails open while a
primary hangs."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from keel.core.cache import RedisCache, redis_client
from keel.core.errors import TooManyRequests
from keel.core.ratelimit import RateLimiter, StrategyName, redis_storage
from tests.contract.test_cache_contract import *  # noqa: F403
from tests.integration.cityguide.test_ready_audio_store import *  # noqa: F403
from tests.integration.test_ratelimit import *  # noqa: F403
from tests.integration.test_ratelimit import decisions
from tests.integration.tickets.conftest import *  # noqa: F403
from tests.integration.tickets.test_idempotency import *  # noqa: F403
from tests.integration.tickets.test_list_cache import *  # noqa: F403
from tests.support.eventually import eventually
from tests.support.redis_topologies import SERVICE, SentinelGroup, sentinel_group

# Characters a URL must escape: the password reaches Redis only if every client decodes it.
PASSWORD = "s@cret:pw/%"


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    with sentinel_group(password=PASSWORD) as group:
        yield group


@pytest.fixture(scope="module")
def redis_url(group: SentinelGroup) -> str:
    return group.url


def node(port: int, password: str | None = PASSWORD) -> redis.Redis:
    """A plain client of one process (data node or Sentinel), not through the Sentinels; a refusal
    is answered at once, not retried."""
    return redis.Redis(port=port, password=password, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def role(port: int) -> str:
    with node(port) as client:
        return str(client.info("replication")["role"])


def calls(port: int, *commands: str) -> int:
    """How many of `commands` the process on `port` has run, by its own statistics."""
    with node(port) as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands)


def cache_errors(cache: RedisCache) -> float:
    return REGISTRY.get_sample_value("cache_requests_total", {"cache": cache.name, "result": "error"}) or 0.0


def other_node(group: SentinelGroup, port: int) -> int:
    return group.replica.port if port == group.primary.port else group.primary.port


async def a_good_replica(group: SentinelGroup) -> tuple[int, int]:
    """(primary, replica) ports once the replica is in sync with the primary: after an earlier
    failover the demoted primary takes a moment to become one."""

    def probe() -> tuple[int, int, bool]:
        primary = group.primary_port()
        replica = other_node(group, primary)
        with node(replica) as client:
            link = client.info("replication")
        synced = (
            link["role"] == "slave" and link["master_port"] == primary and link["master_link_status"] == "up"
        )
        return primary, replica, synced

    primary, replica, _ = await eventually(
        lambda: asyncio.to_thread(probe),
        until=lambda p: p[2],
        timeout_s=30,
        interval_s=0.1,
        what="a synced replica",
        retry_on=(redis.ConnectionError,),  # a node being demoted closes its clients' connections
    )
    return primary, replica


def readonly_errors(port: int) -> int:
    """READONLY errors the process on `port` has answered, by its own statistics."""
    with node(port) as client:
        return int(client.info("errorstats").get("errorstat_READONLY", {}).get("count", 0))


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# -- credentials ---------------------------------------------------------------------------------


def test_the_sentinels_and_the_data_nodes_refuse_a_client_without_the_password(group: SentinelGroup) -> None:
    # Without this the tests below would pass whether or not the credentials reached anyone.
    with node(group.sentinels[0].port, password=None) as sentinel, pytest.raises(redis.AuthenticationError):
        sentinel.sentinel_masters()
    with node(group.primary_port(), password=None) as primary, pytest.raises(redis.AuthenticationError):
        primary.ping()


async def test_keels_client_asks_the_sentinels_and_writes_to_the_primary_with_the_urls_credentials(
    group: SentinelGroup, key_prefix: str
) -> None:
    client = redis_client(group.url, timeout_s=2.0)
    try:
        await client.set(f"{key_prefix}written", b"through the sentinels")
    finally:
        await client.aclose()
    with node(group.primary_port()) as primary:
        assert primary.get(f"{key_prefix}written") == b"through the sentinels"


async def test_the_rate_limiter_counts_on_the_primary_with_the_urls_credentials(
    group: SentinelGroup, key_prefix: str
) -> None:
    # A limiter that cannot authenticate fails open and never refuses: the refusal is the proof.
    limiter = RateLimiter(
        "2/minute", redis_storage(group.url, key_prefix=key_prefix, timeout_s=2.0), name=unique("creds")
    )
    await limiter.check("caller")
    await limiter.check("caller")
    with pytest.raises(TooManyRequests):
        await limiter.check("caller")
    assert decisions(limiter, "failed_open") == 0
    with node(group.primary_port()) as primary:
        assert primary.keys(f"{key_prefix}*"), "no counter on the primary"


# -- counters on the primary only ----------------------------------------------------------------

READS = (
    "evalsha",
    "eval",
    "get",
    "mget",
    "zrange",
    "zrangebyscore",
    "zcard",
    "ttl",
    "pttl",
    "hget",
    "hgetall",
)


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
async def test_rate_limit_counters_are_read_from_the_primary_never_the_replica(
    group: SentinelGroup, key_prefix: str, strategy: StrategyName
) -> None:
    primary, replica = await a_good_replica(group)
    storage = redis_storage(group.url, key_prefix=key_prefix, timeout_s=2.0)
    limiter = RateLimiter("5/minute", storage, name=unique("primary-only"), strategy=strategy)
    # Scripts reach a replica as their effects (ZADD, INCR…), never as EVALSHA: any read counted on
    # the replica was a client's.
    before = {port: calls(port, *READS) for port in (primary, replica)}
    for _ in range(5):
        await limiter.ensure_under("caller")  # reads the window
        await limiter.check("caller")  # counts in it
    with pytest.raises(TooManyRequests):
        await limiter.ensure_under("caller")  # the fifth count is seen at once, by a read
    after = {port: calls(port, *READS) for port in (primary, replica)}
    assert after[replica] == before[replica]
    assert after[primary] - before[primary] >= 12  # 6 reads and 5 counts, each a script call
    # The replica's statistics do count a client's reads: the assertion above can fail.
    with node(replica) as client:
        client.get(f"{key_prefix}probe")
    assert calls(replica, *READS) == before[replica] + 1


# -- planned failovers ---------------------------------------------------------------------------


async def planned_failover(group: SentinelGroup, to: int) -> None:
    """`SENTINEL FAILOVER` to the good replica on port `to`, until every Sentinel names it (the one
    that led the failover tells the others within seconds; a client asks whichever answers). The
    old primary is still up, and still a primary until it is demoted."""

    def ask() -> bool:
        with node(group.sentinels[0].port) as sentinel:
            try:
                return bool(sentinel.sentinel_failover(SERVICE))
            except redis.ResponseError:
                # NOGOODSLAVE: its view of the replica, refreshed every 10 s, is older than the sync.
                return False

    await eventually(
        lambda: asyncio.to_thread(ask), until=bool, timeout_s=30, interval_s=0.2, what="failover"
    )
    await eventually(
        lambda: asyncio.to_thread(named_primaries, group),
        until=lambda ports: ports == {to},
        timeout_s=30,
        interval_s=0.1,
        what="every Sentinel naming the promoted replica",
    )


def named_primaries(group: SentinelGroup) -> set[int]:
    """The primary ports the Sentinels name, each asked in turn."""
    named = set()
    for sentinel in group.sentinels:
        with node(sentinel.port) as client:
            named.add(int(client.sentinel_get_master_addr_by_name(SERVICE)[1]))
    return named


LIMIT = "10/minute"  # under 20 a limiter takes no leases: the store sees every count


@asynccontextmanager
async def keel_writers(
    group: SentinelGroup, key_prefix: str
) -> AsyncIterator[tuple[RedisCache, RateLimiter]]:
    """A cache and a limiter on the Sentinels' URL, as a service builds them."""
    cache = RedisCache(redis_client(group.url, timeout_s=2.0), name=unique("failover"), namespace=key_prefix)
    storage = redis_storage(group.url, key_prefix=key_prefix, timeout_s=2.0)
    try:
        yield cache, RateLimiter(LIMIT, storage, name=unique("failover"))
    finally:
        await cache.client.aclose()


@asynccontextmanager
async def switched(
    group: SentinelGroup, key_prefix: str
) -> AsyncIterator[tuple[RedisCache, RateLimiter, int, int]]:
    """Keel's writers holding connections to the primary, just after a planned failover to the good
    replica: (cache, limiter, old primary's port, new primary's port)."""
    async with keel_writers(group, key_prefix) as (cache, limiter):
        old, new = await a_good_replica(group)
        await write_before_the_switch(cache, limiter, old)
        await planned_failover(group, to=new)
        yield cache, limiter, old, new


async def write_before_the_switch(cache: RedisCache, limiter: RateLimiter, primary: int) -> None:
    """Leaves both clients holding connections to `primary`, and two counts; all of it replicated."""
    await cache.set("tickets:list:u1:open", b"stale page", ttl_s=60)
    await cache.set("tickets:get:u1", b"kept", ttl_s=60)
    await limiter.check("caller")
    await limiter.check("caller")
    with node(primary) as client:
        assert client.wait(1, 5000) == 1  # on the replica before the switch: none of it is lost by it


async def write_after_the_switch(cache: RedisCache, limiter: RateLimiter) -> float:
    """A set, an invalidation and three counts through the same clients; the seconds they took."""
    began = time.monotonic()
    await cache.set("orders:1", b"after the switch", ttl_s=60)
    await cache.delete_prefix("tickets:list:u1:")
    for _ in range(3):
        await limiter.check("caller")
    return time.monotonic() - began


async def assert_written_to(port: int, key_prefix: str, limiter: RateLimiter, counts: int) -> None:
    """What `write_after_the_switch` wrote is on the process at `port`, read there directly, with
    `counts` of the caller in the limiter's window."""
    direct = aioredis.Redis(port=port, password=PASSWORD)
    try:
        cache = RedisCache(direct, name=unique("direct"), namespace=key_prefix)
        assert await cache.get("orders:1") == b"after the switch"
        assert await cache.get("tickets:list:u1:open") is None  # invalidated there
        assert await cache.get("tickets:get:u1") == b"kept"
    finally:
        await direct.aclose()
    there = redis_storage(f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/0", key_prefix=key_prefix)
    window = await MovingWindowRateLimiter(there).get_window_stats(limiter.item, limiter.name, "caller")
    assert window.remaining == limiter.item.amount - counts


async def test_after_a_planned_failover_a_demoted_primarys_readonly_sends_the_next_writes_to_the_new_one(
    group: SentinelGroup, key_prefix: str
) -> None:
    async with switched(group, key_prefix) as (cache, limiter, old, new):
        # Demoted as Sentinel demotes it some seconds later, but without its CLIENT KILL (as by an
        # operator's REPLICAOF, or the FAILOVER command): the connections the clients hold stay
        # open, and a write on them is answered READONLY.
        with node(old) as demoted:
            demoted.replicaof("127.0.0.1", new)
            with pytest.raises(redis.ReadOnlyError):
                demoted.set(f"{key_prefix}x", b"refused")
        answered = readonly_errors(old)

        began = time.monotonic()
        await cache.set("orders:0", b"first after the switch", ttl_s=60)
        await limiter.check("caller")
        assert readonly_errors(old) - answered >= 2  # each client's first write met READONLY
        # That call may degrade (redis-py 8 retries it on the address it had, redis/redis-py#3874),
        # never raise; the connection is dropped, and the next call asks the Sentinels again.
        first = (cache_errors(cache), decisions(limiter, "failed_open"))
        assert first[0] <= 1 and first[1] <= 1
        await write_after_the_switch(cache, limiter)
        took_s = time.monotonic() - began
        assert (cache_errors(cache), decisions(limiter, "failed_open")) == first
        assert readonly_errors(old) - answered <= 4  # no client kept writing to the old primary
        assert took_s < 5
    await assert_written_to(new, key_prefix, limiter, counts=2 + 4 - int(first[1]))


async def test_after_a_planned_failover_writes_follow_the_new_primary_once_sentinel_demotes_the_old(
    group: SentinelGroup, key_prefix: str
) -> None:
    async with switched(group, key_prefix) as (cache, limiter, old, new):
        switched_at = time.monotonic()
        # Sentinel demotes an old primary that is still up some seconds after naming the new one,
        # and closes every client connection to it as it does (CLIENT KILL): a client finds its
        # connection closed, and asks the Sentinels again as it reconnects. The probe's own
        # connection may be among those closed: that is not an answer yet.
        await eventually(
            lambda: asyncio.to_thread(role, old),
            until=lambda r: r == "slave",
            timeout_s=30,
            interval_s=0.1,
            what="the old primary demoted by Sentinel",
            retry_on=(redis.ConnectionError,),
        )
        demoted_s = time.monotonic() - switched_at
        took_s = await write_after_the_switch(cache, limiter)
        print(f"\nSentinel demoted the old primary {demoted_s:.1f} s after promoting the new one")
        # Not one write degraded (a cache error, or a count let through uncounted).
        assert cache_errors(cache) == 0
        assert decisions(limiter, "failed_open") == 0
        assert took_s < 5
    await assert_written_to(new, key_prefix, limiter, counts=2 + 3)


# -- a hung primary ------------------------------------------------------------------------------


async def refused_at_the_third(limiter: RateLimiter, caller: str) -> bool:
    try:
        for _ in range(3):
            await limiter.check(caller)
    except TooManyRequests:
        return True
    return False


async def test_the_rate_limiter_fails_open_while_the_primary_hangs_and_limits_again_on_the_new_one(
    group: SentinelGroup, key_prefix: str
) -> None:
    old, new = await a_good_replica(group)
    # The production storage: its short timeouts, not the generous ones of the tests above.
    limiter = RateLimiter("2/minute", redis_storage(group.url, key_prefix=key_prefix), name=unique("hang"))
    await limiter.check("before")
    await limiter.check("before")
    with pytest.raises(TooManyRequests):
        await limiter.check("before")

    hung = group.by_port(old)
    assert hung.proc is not None
    # kill -STOP: up and accepting connections, answering nothing (a killed one is refused at once).
    hung.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    durations: list[float] = []
    try:
        # One caller, far over its limit of 2, all the while no primary answers.
        deadline = stopped_at + 30
        while group.primary_port() == old:
            assert time.monotonic() < deadline, "no replica promoted within 30 s"
            began = time.monotonic()
            await limiter.check("during")
            durations.append(time.monotonic() - began)
        promoted_s = time.monotonic() - stopped_at
        # Counting again on the new primary: a fresh caller is refused at its limit (the breaker
        # lets a probe through every 3 s).
        await eventually(
            lambda: refused_at_the_third(limiter, unique("after")),
            until=lambda refused: refused,
            timeout_s=30,
            interval_s=0.2,
            what="the limit enforced on the new primary",
        )
    finally:
        hung.proc.send_signal(signal.SIGCONT)
    print(
        f"\nprimary hung: replica promoted {promoted_s:.1f} s after SIGSTOP, {len(durations)} checks "
        f"meanwhile, slowest {max(durations) * 1000:.0f} ms"
    )
    assert len(durations) > 2  # more than the limit: each was let through, none refused, none raised
    # Failing open costs a bounded wait (the 0.25 s socket timeout), not a request's whole deadline.
    assert max(durations) < 2.0
    assert decisions(limiter, "failed_open") >= len(durations) - 1  # the last may have reached the new one
    assert group.primary_port() == new
