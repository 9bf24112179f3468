"""Connecting to a DSN that names several hosts (libpq's `host1:port1,host2:port2`, with
`target_session_attrs=read-write` to find the primary): each host in turn, each with its own timeout.

asyncpg's `connect` tries the hosts in turn too, but under one timeout for the whole list: a host
that takes the connection and never answers (a primary lost with its machine) used it all up, and
the next host, the promoted standby, was never tried. libpq times each host on its own
(connect_timeout), and so does this.

For a pool (`Hosts`), the host the newest connection reached is remembered: new connections try it
first (as pgjdbc's host status cache does) rather than waiting out a silent host's timeout each
time. When a new connection reaches another host, the pool's connections on the old one are cut
(on a silent host each statement would hang until its command timeout) and dropped when checked
out."""

from __future__ import annotations

import os
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

# What opening a connection, or a query on one kept open, can fail with: a caller that carries on
# without it (a LISTEN connection, the start-up check) catches these.
CONNECT_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # TargetServerAttributeNotMatched: no host of the kind asked for
)
# A host that cannot take this connection now (down, silent, starting, or not the kind asked for by
# target_session_attrs): the next one is tried.
_NEXT_HOST = (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.TargetServerAttributeNotMatched)
# One host's attempt: target_session_attrs → a connection.
Attempt = Callable[[str | None], Awaitable[asyncpg.Connection]]


async def connect(
    dsn: str | None = None,
    *,
    timeout: float = 60,  # noqa: ASYNC109 - asyncpg.connect's own keyword (and default), as SQLAlchemy passes it
    **options: Any,
) -> asyncpg.Connection:
    """`asyncpg.connect` with each host of a multi-host `dsn` (or of `host=[…]`, `port=[…]`, as
    SQLAlchemy passes them) given its own `timeout`."""
    conn, _ = await _connect_in_turn(dsn, options, timeout_s=timeout)
    return conn


class Hosts:
    """The connections of one pool: its creator (`connect`) and which host each connection is on."""

    def __init__(self) -> None:
        # The host the newest connection reached; None while the DSN names a single host.
        self.current: str | None = None
        self._of: weakref.WeakKeyDictionary[asyncpg.Connection, str] = weakref.WeakKeyDictionary()

    async def connect(
        self,
        dsn: str | None = None,
        *,
        timeout: float = 60,  # noqa: ASYNC109 - as `connect`'s
        **options: Any,
    ) -> asyncpg.Connection:
        conn, host = await _connect_in_turn(dsn, options, timeout_s=timeout, first=self.current)
        if host is not None:
            if host != self.current:
                self._cut_all_but(host)
            self.current = self._of[conn] = host
        return conn

    def _cut_all_but(self, host: str) -> None:
        """Another host took a new connection (with target_session_attrs=read-write: it is the primary
        now): every connection on any other host is cut, in flight or idle. Its statements fail at
        once, and are done again on the new primary, instead of hanging on a host that no longer
        answers, or writing to one that no longer should (demoted, or cut off and still running)."""
        for conn, on in list(self._of.items()):
            if on != host and not conn.is_closed():
                conn.terminate()

    def stale(self, conn: asyncpg.Connection) -> bool:
        """On another host than the newest connection: from before a failover."""
        if self.current is None:
            return False
        host = self._of.get(conn)
        return host is not None and host != self.current


async def _connect_in_turn(
    dsn: str | None, options: dict[str, Any], *, timeout_s: float, first: str | None = None
) -> tuple[asyncpg.Connection, str | None]:
    """A connection and the host (`host:port`) it reached, None when only one was named; the hosts in
    the order named, `first` moved to the front."""
    options = dict(options)
    hosts, ports = options.pop("host", None), options.pop("port", None)
    target = options.pop("target_session_attrs", None)
    named: list[tuple[str, Attempt]]
    if dsn is not None and len(split := _split_hosts(dsn)) > 1:
        query = dict(parse_qsl(urlsplit(dsn).query, keep_blank_values=True))
        target = target or query.get("target_session_attrs")
        named = [(host, _attempt(single, None, timeout_s, options)) for host, single in split]
    elif isinstance(hosts, list) and len(hosts) > 1:
        named = [
            (f"{h}:{p}", _attempt(None, {"host": h, "port": p}, timeout_s, options))
            for h, p in zip(hosts, ports or [None] * len(hosts), strict=True)
        ]
    else:
        conn = await asyncpg.connect(
            dsn, host=hosts, port=ports, timeout=timeout_s, target_session_attrs=target, **options
        )
        return conn, None
    named.sort(key=lambda pair: pair[0] != first)  # stable: the rest keep their order
    return await _first_usable(named, target or os.environ.get("PGTARGETSESSIONATTRS"))


def _split_hosts(dsn: str) -> list[tuple[str, str]]:
    """(host:port, the same DSN naming that host alone) per host of a libpq DSN."""
    parts = urlsplit(dsn)
    credentials, at, hosts = parts.netloc.rpartition("@")
    return [
        (host, urlunsplit(parts._replace(netloc=f"{credentials}{at}{host}")))
        for host in hosts.split(",")
        if host
    ]


def _attempt(
    dsn: str | None, where: dict[str, Any] | None, timeout_s: float, options: dict[str, Any]
) -> Attempt:
    async def attempt(target: str | None) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, timeout=timeout_s, target_session_attrs=target, **(where or {}), **options
        )
        return conn

    return attempt


async def _first_usable(
    named: list[tuple[str, Attempt]], target: str | None
) -> tuple[asyncpg.Connection, str]:
    """The first host in turn that takes the connection. `prefer-standby`: a standby if one answers,
    else the first host that answered at all."""
    failure: BaseException | None = None
    answered: list[tuple[str, Attempt]] = []
    for host, attempt in named:
        try:
            return await attempt("standby" if target == "prefer-standby" else target), host
        except _NEXT_HOST as exc:
            failure = exc
            if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
                answered.append((host, attempt))
    if target == "prefer-standby":
        for host, attempt in answered:
            try:
                return await attempt("any"), host
            except _NEXT_HOST as exc:
                failure = exc
    assert failure is not None, "a DSN names at least one host"
    raise failure
