"""Secrets stay secret: `keel serve`/`keel worker` refuse the default SECRET in one line (started anyway
only with KEEL_INSECURE_DEFAULTS=1, warned about loudly), `keel up` makes its own per data folder, and no
secret value (SECRET, PREVIOUS_SECRETS, the database password, the S3 secret key) appears in a process's
log output — start-up, failing requests, shutdown at DEBUG — nor in error responses, settings' repr or
validation errors."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pydantic
import pytest

from keel import services
from keel.core.runtime import build_app
from keel.core.secret import embedded_settings
from keel.core.settings import DEFAULT_SECRET, Settings
from keel.core.signing import UrlSigner
from tests.support.servers import free_port, wait_for_port

KNOWN = {
    "SECRET": f"sekret-{uuid.uuid4().hex}",
    "PREVIOUS_SECRETS": f"k0:old-sekret-{uuid.uuid4().hex}",
    "S3_SECRET_ACCESS_KEY": f"s3-sekret-{uuid.uuid4().hex}",
}
DB_PASSWORD = f"pw-{uuid.uuid4().hex}"


def values_of_secrets() -> list[str]:
    return [
        KNOWN["SECRET"],
        KNOWN["PREVIOUS_SECRETS"].split(":", 1)[1],
        KNOWN["S3_SECRET_ACCESS_KEY"],
        DB_PASSWORD,
    ]


def with_password(dsn: str) -> str:
    """The same DSN with a password (the test server trusts loopback and ignores it)."""
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextmanager
def keel_serve(service: str, env: dict[str, str], cwd: Path) -> Iterator[tuple[str, list[str]]]:
    """`keel serve SERVICE` as a child process; yields its base URL and, after exit, its output lines."""
    port = free_port()
    clean = without_secrets()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "serve", service, "--port", str(port)],
        env={**clean, "PYTHONUNBUFFERED": "1", **env},
        cwd=cwd,  # away from any .env in the checkout
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        wait_for_port(port, deadline_s=120)  # a loaded CI machine imports slowly
        yield f"http://127.0.0.1:{port}", output
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        output.extend(out.splitlines())


def without_secrets() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SECRET", "PREVIOUS_SECRETS", "TEST_"))}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("argv", [["serve", "delivery-prefetch"], ["worker", "tickets"]], ids=" ".join)
def test_the_default_secret_stops_serve_and_worker_in_one_line_naming_secret(argv, tmp_path):
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", *argv, "--port", port],
        env={**without_secrets(), "KEEL_DATA_DIR": str(tmp_path), "COLUMNS": "300"},
        cwd=tmp_path,  # away from any .env in the checkout
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1, lines
    [line] = lines
    assert "SECRET" in line and "export SECRET=" in line and "KEEL_INSECURE_DEFAULTS=1" in line
    assert "Traceback" not in line
    print(f"\nkeel {' '.join(argv)} with the default SECRET: exit 2, {line}")


@pytest.mark.timeout(300)
def test_the_default_secret_is_warned_about_by_name_when_insecure_defaults_are_allowed(tmp_path):
    env = {"LOG_LEVEL": "INFO", "KEEL_DATA_DIR": str(tmp_path), "KEEL_INSECURE_DEFAULTS": "1"}
    with keel_serve("delivery-prefetch", env, tmp_path) as (_, out):
        pass
    warnings = [line for line in out if "SECRET" in line and "default" in line]
    assert warnings, "\n".join(out[-30:])
    assert any(level in warnings[0].lower() for level in ("warning", "error"))
    print(f"\ndefault SECRET under `keel serve` (KEEL_INSECURE_DEFAULTS=1): {warnings[0].strip()[:160]}")


def test_keel_up_makes_one_random_secret_per_data_folder_and_keeps_it(tmp_path):
    first = embedded_settings(Settings(_env_file=None, data_dir=tmp_path / "a"))
    again = embedded_settings(Settings(_env_file=None, data_dir=tmp_path / "a"))
    other = embedded_settings(Settings(_env_file=None, data_dir=tmp_path / "b"))
    assert first.secret == again.secret, "a restart must keep the links it signed valid"
    assert first.secret != other.secret and DEFAULT_SECRET not in (first.secret, other.secret)
    assert len(first.secret) >= 40  # 32 random bytes, base64url
    stored = tmp_path / "a" / "secret"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert (
        embedded_settings(Settings(_env_file=None, data_dir=tmp_path / "a", secret="mine")).secret == "mine"
    )
    print(
        f"\nkeel up: SECRET generated once into {stored.name} (mode 0600), reused, distinct per data folder"
    )


def test_no_warning_under_keel_up_or_with_a_real_secret(caplog):
    spec = services.load("delivery-prefetch")
    with caplog.at_level(logging.WARNING, logger="keel.runtime"):
        build_app([spec], Settings(_env_file=None), embedded=True)  # `keel up`: a dev platform
        build_app([spec], Settings(_env_file=None, secret=KNOWN["SECRET"]))
        assert not [r for r in caplog.records if "SECRET" in r.getMessage()]
        build_app([spec], Settings(_env_file=None))
    [warning] = [r for r in caplog.records if "SECRET" in r.getMessage()]
    assert warning.levelno >= logging.WARNING and DEFAULT_SECRET in warning.getMessage()


@pytest.mark.timeout(300)
def test_no_secret_in_the_log_of_start_up_failing_requests_and_shutdown(fresh_pg_dsn, tmp_path):
    env = {
        **KNOWN,
        "POSTGRES_DSN": with_password(fresh_pg_dsn),
        "LOG_LEVEL": "DEBUG",
        "KEEL_DATA_DIR": str(tmp_path),
        "TICKETS_RATE_LIMIT": "",
    }
    forged = UrlSigner("not-the-secret").sign("/files/a.txt", 60).url()
    with (
        keel_serve("tickets", env, tmp_path) as (base, out),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        responses = [
            client.get("/v1/tickets"),  # 401
            client.post("/v1/tickets", json={"title": "x"}, headers={"X-User-Id": "u1"}),  # 422
            client.get(forged),  # 403
            client.get(f"/files/a.txt?exp={int(time.time())}&sig={KNOWN['SECRET'][:8]}"),  # 403
            client.get(f"/v1/tickets/{uuid.uuid4()}", headers={"X-User-Id": "u1"}),  # 404
            client.post("/v1/tickets", content=b"{" * 2_000_000, headers={"X-User-Id": "u1"}),  # 413
        ]
    statuses = [r.status_code for r in responses]
    assert statuses == [401, 422, 403, 403, 404, 413], statuses
    text = "\n".join(out) + "\n".join(r.text for r in responses)
    assert len(out) > 5, "the child logged nothing: the test would prove nothing"
    leaked = [s for s in values_of_secrets() if s in text]
    assert not leaked, f"secrets in the output: {len(leaked)}"
    print(
        f"\nsecrets in logs: {len(out)} log lines at DEBUG (start-up, {len(responses)} failing requests "
        f"{statuses}, shutdown) + response bodies: 0 of {len(values_of_secrets())} secret values"
    )


def test_settings_repr_and_validation_errors_hide_secrets():
    settings = Settings(
        _env_file=None,
        secret=KNOWN["SECRET"],
        previous_secrets=KNOWN["PREVIOUS_SECRETS"],
        s3_secret_access_key=KNOWN["S3_SECRET_ACCESS_KEY"],
        postgres_dsn=f"postgresql://u:{DB_PASSWORD}@db/keel",
    )
    for text in (repr(settings), str(settings)):
        assert not [s for s in values_of_secrets() if s in text]
    with pytest.raises(pydantic.ValidationError) as bad:
        Settings(_env_file=None, previous_secrets=KNOWN["SECRET"])  # no `kid:`: invalid
    assert KNOWN["SECRET"] not in str(bad.value)
    print("\nsettings: repr, str and a validation error of PREVIOUS_SECRETS carry 0 secret values")
