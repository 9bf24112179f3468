"""Signed links on both routes that serve them (the platform's local-storage `/files` route, through the
ticket service, and cityguide's CDN verifier): every forgery is 403 (an expired link 410), never 500;
every check is counted by result; a client that keeps failing is stopped with 429 in the envelope."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import REGISTRY

from keel.cityguide.audio import audio_key, cdn_path
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.core.signing import SignedLink, UrlSigner
from keel.tickets.spec import SPEC as TICKETS
from tests.support.serving import serving_app

SECRET = "signed-links-test-secret-4f1c9a"


@dataclass
class Surface:
    """One route serving signed links, running, with two objects stored behind it."""

    app: Any
    client: httpx.AsyncClient
    signer: UrlSigner
    paths: tuple[str, str]  # the signed paths of the two stored objects

    def as_client(self, host: str) -> httpx.AsyncClient:
        """Another client address (the failure budget is per address)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(self.app, client=(host, 4000)), base_url="http://k"
        )


@asynccontextmanager
async def surface(name: str, make_settings: Any, pg_dsn: str, **overrides: Any) -> AsyncIterator[Surface]:
    settings = make_settings(secret=SECRET, **overrides)
    if name == "files":
        settings = settings.model_copy(update={"postgres_dsn": pg_dsn})
        keys, specs = ["a.txt", "b.txt"], [TICKETS]
        paths = ("/files/a.txt", "/files/b.txt")
    else:
        keys, specs = [audio_key("r1-a0"), audio_key("r1-a1")], [DELIVERY]
        paths = (cdn_path("r1-a0"), cdn_path("r1-a1"))
    async with serving_app(specs, settings, run_workers=False) as (app, client):
        for key in keys:
            await app.state.infra.storage.put(key, b"object " + key.encode(), content_type="audio/wav")
        yield Surface(app, client, app.state.infra.signer, paths)


def link_url(path: str, **query: str | int) -> str:
    return f"{path}?{urlencode(query)}"


def forgeries(s: Surface) -> dict[str, tuple[str, int, str]]:
    """name → (url, expected status, the result it is counted under)."""
    good: SignedLink = s.signer.sign(s.paths[0], 600)
    q = {"exp": good.exp, "kid": good.kid}
    expired = UrlSigner(SECRET, clock=lambda: time.time() - 7200).sign(s.paths[0], 600)
    wrong = UrlSigner("not-the-secret").sign(s.paths[0], 600)
    flipped = ("B" if good.sig[0] == "A" else "A") + good.sig[1:]
    # The right secret, a good signature, an expiry no link is ever given: what a leaked secret or a
    # link from a misconfigured signer would carry (the year 33658 fits the 12-digit field).
    far = UrlSigner(SECRET, clock=lambda: time.time() + 10 * 365 * 86400).sign(s.paths[0], 600)
    farthest = UrlSigner(SECRET, clock=lambda: 10**12 - 1000).sign(s.paths[0], 600)
    return {
        "tampered path": (link_url(s.paths[1], **q, sig=good.sig), 403, "bad_signature"),
        "tampered expiry": (
            link_url(s.paths[0], exp=good.exp + 3600, kid=good.kid, sig=good.sig),
            403,
            "bad_signature",
        ),
        "flipped character": (link_url(s.paths[0], **q, sig=flipped), 403, "bad_signature"),
        "expired": (expired.url(), 410, "expired"),
        "expiry ten years ahead": (far.url(), 403, "expiry_too_far"),
        "expiry in the year 33658": (farthest.url(), 403, "expiry_too_far"),
        "wrong secret": (wrong.url(), 403, "bad_signature"),
        "truncated": (link_url(s.paths[0], **q, sig=good.sig[:7]), 403, "bad_signature"),
        "empty signature": (link_url(s.paths[0], **q, sig=""), 403, "bad_signature"),
        "non-ASCII signature": (link_url(s.paths[0], **q, sig=good.sig[:7] + "é"), 403, "bad_signature"),
        "non-ASCII, 8 characters": (link_url(s.paths[0], **q, sig="ééééééé\u00ff"), 403, "bad_signature"),
        "unknown key id": (link_url(s.paths[0], exp=good.exp, kid="k9", sig=good.sig), 403, "bad_signature"),
        "expiry with a leading zero": (
            link_url(s.paths[0], exp=f"0{good.exp}", kid=good.kid, sig=good.sig),
            403,
            "malformed",
        ),
        "expiry not a number": (
            link_url(s.paths[0], exp="soon", kid=good.kid, sig=good.sig),
            403,
            "malformed",
        ),
        "no query at all": (s.paths[0], 403, "malformed"),
    }


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("link_verifications_total", {"result": result}) or 0.0


def limited(name: str) -> float:
    labels = {"limiter": name, "outcome": "limited"}
    return REGISTRY.get_sample_value("rate_limit_decisions_total", labels) or 0.0


@pytest.mark.parametrize("route", ["files", "cdn"])
async def test_every_forgery_is_refused_in_the_envelope_and_counted_by_result(
    route, make_settings, fresh_pg_dsn
):
    async with surface(route, make_settings, fresh_pg_dsn, link_failure_limit="") as s:
        good = await s.client.get(s.signer.sign(s.paths[0], 600).url())
        assert good.status_code == 200, good.text
        outcomes = {}
        for name, (url, status, result) in forgeries(s).items():
            before = counted(result)
            response = await s.client.get(url)
            outcomes[name] = response.status_code
            assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
            assert set(response.json()["error"]) >= {"code", "message", "request_id"}, name
            assert SECRET not in response.text
            assert counted(result) == before + 1, f"{name} not counted as {result}"
    print(
        f"\nsigned links ({route}): {len(outcomes)} forgeries, statuses {sorted(set(outcomes.values()))}, 0 5xx"
    )


@pytest.mark.parametrize("route", ["files", "cdn"])
async def test_a_client_over_its_failure_budget_gets_429_and_others_are_served(
    route, make_settings, fresh_pg_dsn
):
    async with surface(route, make_settings, fresh_pg_dsn, link_failure_limit="5/minute") as s:
        forged = forgeries(s)["flipped character"][0]
        good = s.signer.sign(s.paths[0], 600).url()
        limited_before = limited("signed-links")
        async with s.as_client("203.0.113.7") as guesser, s.as_client("198.51.100.9") as other:
            statuses = [(await guesser.get(forged)).status_code for _ in range(8)]
            refused = await guesser.get(good)  # over budget: even a valid link waits
            served = await other.get(good)
            expired = UrlSigner(SECRET, clock=lambda: time.time() - 7200).sign(s.paths[0], 600).url()
            owner = [(await other.get(expired)).status_code for _ in range(8)]
    assert statuses == [403] * 5 + [429] * 3, statuses
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited" and refused.json()["error"]["request_id"]
    assert served.status_code == 200
    assert owner == [410] * 8, "expired links were issued, not guessed: they must not use up the budget"
    assert limited("signed-links") - limited_before == 4
    print(
        f"\nsigned-link failure budget ({route}, 5/minute): guesser {statuses} then a valid link "
        f"{refused.status_code}; another client {served.status_code}; 8 expired links {set(owner)}"
    )


@pytest.mark.parametrize("route", ["files", "cdn"])
async def test_junk_in_every_query_parameter_is_a_client_error_never_500(route, make_settings, fresh_pg_dsn):
    junk = [
        "",
        " ",
        "%",
        "\x00",
        "\u202e",
        "\ud7ff" * 8,
        "A" * 43,
        "A" * 8 + "=",
        "-1",
        "1e9",
        "99999999999999",
        "../..",
        "k1\nk2",
    ]
    async with surface(route, make_settings, fresh_pg_dsn, link_failure_limit="") as s:
        good = s.signer.sign(s.paths[0], 600)
        statuses: dict[int, int] = {}
        for value in junk:
            for field in ("exp", "sig", "kid"):
                if field == "kid" and not value:
                    continue  # no kid means the current key: the link is valid
                query = {"exp": good.exp, "kid": good.kid, "sig": good.sig, field: value}
                response = await s.client.get(link_url(s.paths[0], **query))
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code in (403, 422), f"{field}={value!r}: {response.status_code}"
    print(f"\nsigned links ({route}): {sum(statuses.values())} junk parameters → {statuses}, 0 5xx")
