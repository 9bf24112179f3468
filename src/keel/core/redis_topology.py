"""Which Redis a REDIS_URL names, and a client for it: one server, a primary found through
Sentinels, or a Redis Cluster. Every Redis user of Keel (caches, idempotency keys, rate limits,
delivery pages) takes its client from here, so each topology is one setting away.

    redis://[user:password@]host:port/db          one server (`rediss://`: TLS)
    redis+sentinel://[user:password@]host:port,host:port/service[/db]
                                                  the primary the Sentinels name for `service`;
                                                  after a failover the client asks them again
    redis+cluster://[user:password@]host:port,host:port
                                                  a Redis Cluster: each key goes to its slot's master

On a Cluster a Lua script or a transaction may only touch keys of one slot. Keel's multi-key
scripts keep their keys together with hash tags (`{...}` in the key): a cache's keys share its
namespace tag, a route's ready-audio keys share the route's tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from keel.core import redis_packing

# Every Redis client of Keel is built here, and the `limits` storages are configured from here:
# importing this module makes every asyncio connection of the process pack its commands with
# hiredis (keel.core.redis_packing says why).
redis_packing.install()

Kind = Literal["server", "sentinel", "cluster"]

# What a Redis call raises when Redis, not the caller, failed; every Redis user degrades on these.
# Socket errors and timeouts surface as RedisError (OSError covers what slips through). redis-py's
# async Cluster client also reinitialises after a timeout and closes connections that concurrent
# commands are still writing to: those fail with AttributeError or TypeError on the closed socket
# (seen with 50 concurrent creates on a loopback Cluster), not with a ConnectionError.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, AttributeError, TypeError)
RedisClient = aioredis.Redis | RedisCluster

_KINDS: dict[str, Kind] = {
    "redis": "server",
    "rediss": "server",
    "unix": "server",
    "redis+sentinel": "sentinel",
    "redis+cluster": "cluster",
}


@dataclass(frozen=True)
class RedisTopology:
    kind: Kind
    url: str = field(repr=False)  # may hold a password
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> RedisTopology:
        parts = urlsplit(url)
        kind = _KINDS.get(parts.scheme)
        if kind is None:
            raise ValueError(
                f"REDIS_URL scheme {parts.scheme!r}: use redis://, rediss://, redis+sentinel:// or redis+cluster://"
            )
        if kind == "server":
            return cls(kind, url)
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        nodes = tuple(_node(h) for h in hosts.split(",") if h)
        if not nodes:
            raise ValueError(f"REDIS_URL ({parts.scheme}) names no host:port")
        path = [p for p in parts.path.split("/") if p]
        service, db = None, 0
        if kind == "sentinel":
            if not path:
                raise ValueError(
                    "REDIS_URL redis+sentinel://host:port,.../SERVICE[/DB] needs the service name"
                )
            service, db = path[0], int(path[1]) if len(path) > 1 else 0
        return cls(
            kind,
            url,
            nodes,
            service,
            db,
            unquote(username) or None,
            unquote(password) or None,
        )

    @property
    def credentials(self) -> dict[str, str]:
        """The URL's user and password, decoded, where set (a Sentinel or Cluster URL's; one server's
        URL carries its own to redis-py, which decodes it)."""
        return {k: v for k, v in (("username", self.username), ("password", self.password)) if v}

    def sentinel_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """What the Sentinels themselves get of a client's `options`: the same bounded waits (they answer
        "who is the primary") and the URL's credentials (redis-py gives them only `sentinel_kwargs`)."""
        return {k: v for k, v in options.items() if k.startswith("socket_")} | self.credentials

    def client(self, **options: Any) -> RedisClient:
        """A client with redis-py's connection `options` (timeouts, pool size, retry)."""
        credentials: dict[str, Any] = self.credentials
        if self.kind == "server":
            return aioredis.from_url(self.url, **options)
        if self.kind == "sentinel":
            assert self.service is not None
            sentinels = Sentinel(  # type: ignore[no-untyped-call]
                list(self.nodes),
                sentinel_kwargs=self.sentinel_options(options),
                **credentials,
            )
            primary: aioredis.Redis = sentinels.master_for(self.service, db=self.db, **credentials, **options)
            return primary
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.nodes], **credentials, **options
        )

    def limits_uri(self) -> str:
        """The same Redis in the URI form of the `limits` library's async storages."""
        if self.kind == "server":
            return f"async+{self.url}"
        return f"async+{urlsplit(self.url).scheme}://{urlsplit(self.url).netloc}/{self.service or ''}"


def _node(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"REDIS_URL node {text!r}: expected host:port")
    return host.strip("[]"), int(port)


def hash_tagged(namespace: str) -> str:
    """`namespace` with a Cluster hash tag, so every key under it lands in one slot: unchanged when it
    already holds one (`keel:{x}:`), else the whole namespace becomes the tag (`{keel:cache:x}:`)."""
    opening = namespace.find("{")
    if opening != -1 and namespace.find("}", opening) > opening + 1:
        return namespace
    return "{" + namespace.rstrip(":") + "}:"
