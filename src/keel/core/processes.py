"""Several HTTP worker processes on one port (`keel serve SERVICE --workers N`).

The parent binds the listening socket and starts N copies of the same `keel serve` command, each handed
the socket's file descriptor; the kernel spreads connections across the processes that accept on it.
Each worker is a fresh interpreter (not a fork): prometheus-client picks its multiprocess value store at
import time from PROMETHEUS_MULTIPROC_DIR, which the parent sets (wiped at start) before any worker
imports it, so `/metrics` of any worker aggregates all of them (keel.core.metrics.render_latest).

The parent starts the first worker alone and the others once it serves: a first worker that cannot
start ends the parent with its exit status. After that the parent restarts a worker that dies,
forwards SIGTERM/SIGINT (each worker drains its in-flight requests), and removes what the dead workers
left in the metrics directory.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from keel.core.http_server import bind

log = logging.getLogger("keel.processes")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker that dies this soon after its start is failing to start: back off before the next one.
STARTUP_GRACE_S = 5.0
MAX_BACKOFF_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.2


def metrics_dir() -> tuple[Path, bool]:
    """PROMETHEUS_MULTIPROC_DIR when set (wiped: files of an earlier run would be summed in), else a
    private temporary directory; the flag says whether it is ours to remove at exit."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        if path.exists():
            for entry in path.glob("*.db"):
                entry.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="keel-metrics-")), True


def mark_dead(directory: Path, pid: int) -> None:
    """What prometheus-client's `multiprocess.mark_process_dead` does, without importing it here (the
    parent never serves metrics): drop the dead worker's live-gauge files."""
    for path in directory.glob(f"gauge_live*_{pid}.db"):
        path.unlink(missing_ok=True)


class WorkerProcesses:
    """Runs `argv` (a `keel serve` command that takes the socket with `--fd`) `count` times."""

    def __init__(self, argv: Sequence[str], count: int, sock: socket.socket, directory: Path) -> None:
        self.argv = [*argv, "--fd", str(sock.fileno())]
        self.count = count
        self.sock = sock
        self.directory = directory
        self.env = {**os.environ, MULTIPROC_ENV: str(directory)}
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started_at = [0.0] * count
        self.failures = [0] * count
        self.stopping = False

    def _start(self, slot: int) -> None:
        # Our own command line (sys.executable -m keel.cli), never user input.
        proc = subprocess.Popen(self.argv, env=self.env, pass_fds=(self.sock.fileno(),))  # noqa: S603
        self.procs[slot] = proc
        self.started_at[slot] = time.monotonic()
        log.info("HTTP worker %d started (pid %d)", slot, proc.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # The first worker's start is the service's: one that cannot start (a bad setting, PostgreSQL
        # unreachable, a broker that refuses it) ends the parent with its exit status and its one
        # line, as `keel serve` alone does, instead of being restarted forever. Later deaths restart.
        self._start(0)
        failed = self._first_start()
        if failed is not None:
            return failed
        for slot in range(1, self.count):
            self._start(slot)
        restart_at: dict[int, float] = {}
        while not self.stopping:
            time.sleep(POLL_S)
            now = time.monotonic()
            for slot, proc in enumerate(self.procs):
                if proc is None:
                    if slot in restart_at and now >= restart_at[slot]:
                        del restart_at[slot]
                        self._start(slot)
                    continue
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                mark_dead(self.directory, proc.pid)
                self.procs[slot] = None
                quick = now - self.started_at[slot] < STARTUP_GRACE_S
                self.failures[slot] = self.failures[slot] + 1 if quick else 0
                delay = min(MAX_BACKOFF_S, 0.5 * 2 ** self.failures[slot]) if quick else 0.0
                log.error(
                    "HTTP worker %d (pid %d) exited with %s; restarting in %.1fs", slot, proc.pid, code, delay
                )
                restart_at[slot] = now + delay
        return self.stop()

    def _first_start(self) -> int | None:
        """None once the first worker answers `/healthz` on the shared socket (it is the only one yet);
        its exit status if it exits first; the stop's status if the parent is told to stop."""
        proc = self.procs[0]
        assert proc is not None
        host, port = self.sock.getsockname()[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a bind-all address: ask on loopback
        while not self.stopping:
            code = proc.poll()
            if code is not None:
                mark_dead(self.directory, proc.pid)
                self.procs[0] = None
                log.error("HTTP worker 0 (pid %d) could not start (exit %s); stopping", proc.pid, code)
                return code or 1
            if _answers(host, port):
                return None
            time.sleep(POLL_S)
        return self.stop()

    def stop(self) -> int:
        """SIGTERM to every worker (each drains its in-flight requests); kill what outlives the deadline."""
        live = [p for p in self.procs if p is not None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("HTTP worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        return max((p.returncode or 0 for p in live), default=0)


def serve_workers(argv: Sequence[str], count: int, host: str, port: int) -> int:
    """Bind `host:port`, run `count` workers of `argv` until SIGTERM/SIGINT; returns an exit status."""
    sock = bind(host, port)
    sock.set_inheritable(True)
    directory, owned = metrics_dir()
    try:
        return WorkerProcesses(argv, count, sock, directory).run()
    finally:
        sock.close()
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


def _answers(host: str, port: int) -> bool:
    """`GET /healthz` answered 200 (a worker past its start-up serves it)."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def self_command() -> list[str]:
    """This program, as a command a worker process runs (`python -m keel.cli`)."""
    return [sys.executable, "-m", "keel.cli"]
