"""A process started with a setting that is unsafe in production says so at start, in one line that
names the fix; `keel up` (a developer's machine, `embedded`) does not."""

from __future__ import annotations

import logging

import pytest

from keel.core.runtime import build_app
from keel.core.settings import DEFAULT_SECRET, Settings

SECRET = "s3cr3t-for-the-test-only-0123456789"


def startup_warnings(caplog: pytest.LogCaptureFixture, settings: Settings, **options: bool) -> list[str]:
    with caplog.at_level(logging.WARNING, logger="keel.runtime"):
        build_app([], settings, **options)
    return [r.getMessage() for r in caplog.records if r.name == "keel.runtime"]


def test_the_default_secret_is_named_with_its_fix(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(_env_file=None, SECRET=DEFAULT_SECRET, AUTH_MODE="jwt", AUTH_JWT_SECRET=SECRET)
    [line] = startup_warnings(caplog, settings)
    assert "SECRET is the default" in line and "set SECRET in production" in line


def test_header_identity_without_trusted_proxies_is_named_with_its_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(_env_file=None, SECRET=SECRET, AUTH_MODE="header", TRUSTED_PROXIES="")
    [line] = startup_warnings(caplog, settings)
    assert "AUTH_MODE=header with no TRUSTED_PROXIES" in line and "AUTH_MODE=jwt" in line
    # A worker serves no routes: nobody's identity is read, nothing to warn about.
    caplog.clear()
    assert startup_warnings(caplog, settings, serve_routes=False) == []


def test_trusted_proxies_or_jwt_start_without_a_word(caplog: pytest.LogCaptureFixture) -> None:
    proxied = Settings(_env_file=None, SECRET=SECRET, AUTH_MODE="header", TRUSTED_PROXIES="127.0.0.1/32")
    assert startup_warnings(caplog, proxied) == []
    jwt = Settings(_env_file=None, SECRET=SECRET, AUTH_MODE="jwt", AUTH_JWT_SECRET=SECRET)
    assert startup_warnings(caplog, jwt) == []


def test_keel_up_on_a_developers_machine_is_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(_env_file=None, SECRET=DEFAULT_SECRET, AUTH_MODE="header", TRUSTED_PROXIES="")
    assert startup_warnings(caplog, settings, embedded=True) == []
