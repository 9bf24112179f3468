"""The infrastructure a process runs on, built once at start-up and handed to every service:
database, Redis, bus, caches, object storage — embedded defaults when nothing is configured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from redis.exceptions import AuthenticationError as RedisAuthenticationError

from keel.core import embedded_pg
from keel.core.bus.errors import BrokerUnavailable
from keel.core.bus.factory import build_bus
from keel.core.bus.port import Bus
from keel.core.cache import Cache, MemoryCache, RedisCache, redis_client
from keel.core.db import Database, dsn_hosts, libpq_dsn
from keel.core.db_hosts import CONNECT_FAILURES, connect
from keel.core.errors import StartupError
from keel.core.health import ReadinessCheck
from keel.core.outbox import Outbox
from keel.core.redis_topology import REDIS_FAILURES, RedisClient
from keel.core.schema import require_current, upgrade
from keel.core.settings import Settings
from keel.core.signing import UrlSigner

if TYPE_CHECKING:
    from keel.core.identity import Authenticator
    from keel.core.storage import ObjectStore

log = logging.getLogger("keel.infra")
REDIS_START_PROBE_S = 2.0
REDIS_START_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *REDIS_FAILURES)


@dataclass
class Infra:
    settings: Settings
    bus: Bus
    db: Database | None = None
    redis: RedisClient | None = None
    checks: list[ReadinessCheck] = field(default_factory=list)
    memory_cache_entries: int = 10_000
    # Set by the runtime when this process runs an outbox relay: writers wake it after a commit.
    wake_relay: Callable[[], None] = lambda: None
    # True under `keel up` (every service in this process, the memory bus feeding them when no broker is
    # configured); False for a lone `keel serve`/`keel worker`, where a memory bus would stay empty.
    embedded: bool = False

    _storage: ObjectStore | None = None
    _signer: UrlSigner | None = None
    _authenticator: Authenticator | None = None

    @property
    def authenticator(self) -> Authenticator:
        """The process's caller resolver (keel.core.identity): the app's, handed in by the runtime, so
        that fast paths and routes share its caches; built from the settings when run without an app."""
        if self._authenticator is None:
            from keel.core.identity import build_authenticator

            self._authenticator = build_authenticator(self.settings, embedded=self.embedded)
        return self._authenticator

    def use_authenticator(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    @property
    def signer(self) -> UrlSigner:
        """The one link signer of this process (SECRET), shared by storage and signed CDN links."""
        if self._signer is None:
            s = self.settings
            self._signer = UrlSigner(
                s.secret, key_id=s.secret_key_id, previous=s.previous_secrets, max_ttl_s=s.link_ttl_sec
            )
        return self._signer

    @property
    def storage(self) -> ObjectStore:
        """Object storage, built on first use: only services that store files pay for it."""
        if self._storage is None:
            from keel.core.storage import build_object_store

            self._storage = build_object_store(self.settings, self.signer)
        return self._storage

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.settings.outbox_shards, wake=self.wake_relay)

    def cache(self, name: str) -> Cache:
        """Redis when configured, else an in-process LRU: the same port either way."""
        if self.redis is not None:
            return RedisCache(self.redis, name=name)
        return MemoryCache(max_entries=self.memory_cache_entries, name=name)

    def require_db(self) -> Database:
        if self.db is None:
            raise RuntimeError("this service needs PostgreSQL but the process was started without it")
        return self.db


async def resolve_dsn(settings: Settings) -> str:
    """POSTGRES_DSN when set; otherwise an embedded PostgreSQL under the data dir (never SQLite)."""
    if settings.postgres_dsn:
        return settings.postgres_dsn
    server = embedded_pg.start(settings.data_dir)
    admin = embedded_pg.socket_dsn(server, "postgres")
    await embedded_pg.ensure_database(admin)
    return embedded_pg.socket_dsn(server, embedded_pg.DATABASE)


async def reach_postgres(dsn: str, timeout_s: float) -> None:
    """Open one connection before anything else does, so a wrong POSTGRES_DSN stops start-up with one
    line that says what PostgreSQL answered, not with the traceback of the first query."""
    parts = urlsplit(libpq_dsn(dsn))
    where = f"{','.join(dsn_hosts(dsn))}{parts.path or '/'}"
    try:
        conn = await connect(libpq_dsn(dsn), timeout=timeout_s)
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s"
    except CONNECT_FAILURES as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        await conn.close()
        return
    raise StartupError(
        f"cannot connect to PostgreSQL at {where} as {parts.username!r}: {reason}; check POSTGRES_DSN"
    )


async def reach_redis(client: RedisClient, url: str) -> None:
    """Redis unreachable at start is an outage, not a deployment error: its users degrade (caches read
    the database, limits fail open) and /readyz says 503 until it answers, so the process starts with
    one warning line instead of failing; it reconnects on its own. Credentials it refuses stop the
    start in one line."""
    try:
        async with asyncio.timeout(REDIS_START_PROBE_S):
            await client.ping()
    except RedisAuthenticationError as exc:
        # Refused, not away: a deployment error that no reconnect will cure.
        raise StartupError(
            f"Redis at {_redis_where(url)} refused the credentials: {exc}; check the user and password "
            "in REDIS_URL"
        ) from None
    except REDIS_START_FAILURES as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning(
            "Redis unreachable at %s (%s): starting degraded (caches and limits go without it, /readyz "
            "503 until it answers); check REDIS_URL",
            _redis_where(url),
            reason,
        )


def _redis_where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"  # no credentials


async def ensure_topics(bus: Bus, topics: Sequence[str]) -> None:
    """Create the topics with our partition count now if the broker answers. If it is away, start
    anyway: the API serves, the outbox fills, and producers and consumers create the topics on first
    use once the broker is back. If it refuses this client, stop with the one line that says why."""
    try:
        await bus.ensure_topics(list(topics))
    except BrokerUnavailable as exc:
        # Away is an outage the outbox rides out; refused (credentials, TLS) is a deployment error.
        if reason := await bus.refusal():
            raise StartupError(reason) from None
        log.warning("broker unreachable at start; %s created on first use (%s)", ", ".join(topics), exc)


@asynccontextmanager
async def open_infra(
    settings: Settings,
    *,
    database: bool = True,
    migrate: bool = True,
    topics: Sequence[str] = (),
    dsn: str | None = None,
    broker_required: bool = False,
) -> AsyncIterator[Infra]:
    """`broker_required`: a process whose only work needs the broker (`keel worker`) is not ready
    without it; one that serves HTTP is ready but degraded (its outbox holds the events). `migrate`:
    apply the migrations; else only check that the database is at this code's revision."""
    async with AsyncExitStack() as stack:
        bus = build_bus(settings)
        stack.push_async_callback(bus.close)
        if topics:
            await ensure_topics(bus, topics)
        infra = Infra(settings=settings, bus=bus)
        if database:
            dsn = dsn or await resolve_dsn(settings)
            await reach_postgres(dsn, settings.db_connect_timeout_s)
            if migrate:
                await upgrade(dsn, pooler=settings.db_pooler)
            else:
                await require_current(dsn, pooler=settings.db_pooler)
            infra.db = Database.connect(
                dsn,
                pool_size=settings.db_pool_size,
                connect_timeout_s=settings.db_connect_timeout_s,
                pooler=settings.db_pooler,
                listen_dsn=settings.postgres_listen_dsn,
            )
            if infra.db.listen_dsn is None:
                log.info(
                    "DB_POOLER=%s and no POSTGRES_LISTEN_DSN: nothing LISTENs; the outbox relay polls "
                    "every %ss",
                    settings.db_pooler,
                    settings.outbox_poll_interval_s,
                )
            stack.push_async_callback(infra.db.dispose)
            infra.checks.append(ReadinessCheck("postgres", infra.db.ping))
        if settings.redis_url:
            infra.redis = redis_client(settings.redis_url)
            stack.push_async_callback(infra.redis.aclose)
            await reach_redis(infra.redis, settings.redis_url)
            infra.checks.append(ReadinessCheck("redis", infra.redis.ping))
        if settings.uses_kafka:
            infra.checks.append(ReadinessCheck("kafka", bus.ping, required=broker_required))
        yield infra
