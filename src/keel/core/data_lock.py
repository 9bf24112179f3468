"""One `keel up` per data folder, and a port checked before anything starts.

Two `keel up` on one data folder would share its embedded PostgreSQL but not their in-memory buses:
each relay would publish the other's outbox rows to its own bus, and work registered on one would be
done by the other. The first takes an exclusive lock on `<data dir>/keel-up.lock` (released by the
kernel when the process ends, however it ends) and writes its pid and address there; a second finds
the lock taken and stops at once, naming the first.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import TextIO

from keel.core.errors import StartupError

LOCK_FILE = "keel-up.lock"


def hold_data_dir(data_dir: Path, address: str) -> TextIO | None:
    """Lock `data_dir` for this process (keep the returned file open as long as it runs), or raise a
    StartupError naming the process that holds it. No lock on Windows (no flock there)."""
    if sys.platform == "win32":
        return None
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    lock = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "a process that has not written its address yet"
        lock.close()
        raise StartupError(
            f"another keel up ({holder}) is running on the data folder {data_dir}: "
            "stop it, or give this one a folder of its own with --data-dir DIR"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {address}\n")
    lock.flush()
    return lock


def check_port_free(host: str, port: int) -> None:
    """StartupError when `host:port` cannot be bound (taken, or not an address of this machine),
    checked before the database, the migrations and the services start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the server binds: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = "is already in use (another keel up, or another server)"
            else:
                reason = f"cannot be bound: {exc.strerror or exc}"
            raise StartupError(
                f"{host}:{port} {reason}: choose another with --port (make run PORT=8001)"
            ) from None
