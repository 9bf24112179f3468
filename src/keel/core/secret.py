"""SECRET at start-up: `keel serve`/`keel worker` refuse the seeds' default, `keel up` makes its own.

The seeds' `secret` is public, so every link signed with it can be forged. A served process with it
stops before anything starts (one line, exit 2) unless `KEEL_INSECURE_DEFAULTS=1` says this is an
experiment. `keel up` needs no configuration: it generates a random secret once per data folder
(`KEEL_DATA_DIR/secret`, mode 0600) and reuses it, so links stay valid across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from keel.core.errors import StartupError
from keel.core.settings import DEFAULT_SECRET, Settings

log = logging.getLogger("keel.secret")

SECRET_FILE = "secret"  # noqa: S105 - the file name under KEEL_DATA_DIR, not a secret


def refuse_default_secret(settings: Settings) -> None:
    """StartupError (one line naming SECRET and how to set it) for the default secret, unless
    KEEL_INSECURE_DEFAULTS is set; the runtime then still warns at start."""
    if settings.secret != DEFAULT_SECRET or settings.insecure_defaults:
        return
    raise StartupError(
        f"SECRET is the public default {DEFAULT_SECRET!r}, so signed links could be forged: "
        "set SECRET to a random value (e.g. `export SECRET=$(openssl rand -hex 32)`), "
        "or KEEL_INSECURE_DEFAULTS=1 for an experiment"
    )


def data_dir_secret(data_dir: Path) -> str:
    """The secret of this data folder: read, or generated and stored on first use. Written to a
    temporary file and linked into place, so two processes starting at once agree on one secret
    and nobody reads a half-written file."""
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process won: its secret is the one
            os.link(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    log.info("generated a signing secret for this data folder: %s", path)
    return _read(path)


def _read(path: Path) -> str:
    value = path.read_text(encoding="ascii").strip()
    if not value:
        raise StartupError(f"{path} is empty: delete it to have a new secret generated, or set SECRET")
    return value


def embedded_settings(settings: Settings) -> Settings:
    """`keel up`'s settings: a SECRET left at the default becomes this data folder's own."""
    if settings.secret != DEFAULT_SECRET:
        return settings
    return settings.model_copy(update={"secret": data_dir_secret(settings.data_dir)})
