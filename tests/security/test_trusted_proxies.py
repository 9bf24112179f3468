"""X-Forwarded-For is believed only from TRUSTED_PROXIES (default: nobody): from loopback with the setting
unset, rotating the header does not change the address the per-client limits see — the signed-link
failure budget stops the guesser — while with TRUSTED_PROXIES=127.0.0.1/32 each forwarded address is its
own client. Served as `keel serve` serves (keel.core.http_server), over real sockets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pydantic
import pytest

from keel.cityguide.audio import cdn_path
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.core.runtime import build_app
from keel.core.settings import Settings
from tests.support.serving import served

BUDGET = 3


@contextmanager
def delivery(make_settings: Any, **overrides: Any) -> Iterator[httpx.Client]:
    settings = make_settings(
        secret="trusted-proxies-test", link_failure_limit=f"{BUDGET}/minute", **overrides
    )
    app = build_app([DELIVERY], settings, run_workers=False)
    with served(app, settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def guesses_with_rotating_forwarded_for(client: httpx.Client, n: int) -> list[int]:
    forged = f"{cdn_path('r1-a0')}?exp=9999999999&kid=k1&sig=AAAAAAAA"
    return [
        client.get(forged, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(1, n + 1)
    ]


def test_forwarded_for_from_an_untrusted_peer_does_not_change_the_client(make_settings):
    with delivery(make_settings) as client:
        statuses = guesses_with_rotating_forwarded_for(client, BUDGET + 3)
        refused = client.get(
            f"{cdn_path('r1-a0')}?exp=1&sig=AAAAAAAA", headers={"X-Forwarded-For": "198.51.100.1"}
        )
    assert statuses == [403] * BUDGET + [429] * 3, statuses
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    print(
        f"\nTRUSTED_PROXIES unset: {BUDGET + 3} guesses from loopback, X-Forwarded-For rotated → {statuses}"
    )


def test_forwarded_for_from_a_trusted_proxy_names_the_client(make_settings):
    with delivery(make_settings, trusted_proxies="127.0.0.1/32") as client:
        statuses = guesses_with_rotating_forwarded_for(client, BUDGET + 3)
        same = [
            client.get(f"{cdn_path('r1-a0')}?exp=1&sig=AAAAAAAA", headers={"X-Forwarded-For": "198.51.100.1"})
            for _ in range(BUDGET + 1)
        ]
    assert statuses == [403] * (BUDGET + 3), "each forwarded address is its own client"
    assert [r.status_code for r in same] == [403] * BUDGET + [429], "one forwarded client meets its budget"
    print(
        f"\nTRUSTED_PROXIES=127.0.0.1/32: rotated X-Forwarded-For → {statuses}; one address → 429 after {BUDGET}"
    )


def test_trusted_proxies_is_a_list_of_cidrs():
    settings = Settings.model_validate({"TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,::1/128"})
    assert settings.trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]
    assert Settings(_env_file=None).trusted_proxies == []
    with pytest.raises(pydantic.ValidationError, match="TRUSTED_PROXIES"):
        Settings.model_validate({"TRUSTED_PROXIES": "not-an-address"})
