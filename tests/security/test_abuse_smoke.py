"""The abuse smoke for CI: the five HTTP services served in one app as `keel serve` serves
them, on their defaults but for a small order-miss budget, and a handful of attacks across them, each
answered with the status that stops it, in the envelope, and never a 5xx."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from keel import services
from keel.cityguide.audio import cdn_path
from keel.core.runtime import build_app
from keel.core.settings import Settings
from tests.support.serving import served

pytestmark = pytest.mark.timeout(300)

MISS_BUDGET = 5


@pytest.fixture(scope="module")
def client(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = Settings.model_validate(
        {"postgres_dsn": pg_dsn, "secret": "abuse-smoke-secret", "data_dir": tmp_path_factory.mktemp("smoke")}
    )
    names = ("tickets", "orders", "videos", "orchestrator", "delivery-prefetch")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ORDER_MISS_LIMIT", f"{MISS_BUDGET}/minute")
        app = build_app([services.load(n) for n in names], settings, run_workers=False)
        with served(app, settings) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield client


def as_(name: str) -> dict[str, str]:
    return {"X-User-Id": f"{name}-{uuid.uuid4().hex[:6]}"}


def claimed_operator(c: httpx.Client) -> list[httpx.Response]:
    headers = {**as_("mallory"), "X-User-Roles": "operator", "X-Forwarded-For": "10.0.0.1"}
    return [c.post("/workflows/any-route/restart?step=tts_batch", headers=headers)]


def someone_elses_ticket(c: httpx.Client) -> list[httpx.Response]:
    ticket = c.post("/v1/tickets", json={"title": "mine", "description": "d"}, headers=as_("alice"))
    assert ticket.status_code == 201
    return [c.get(f"/v1/tickets/{ticket.json()['id']}", headers=as_("mallory"))]


def someone_elses_video(c: httpx.Client) -> list[httpx.Response]:
    body = {"title": "mine", "url": f"https://cdn.example.com/{uuid.uuid4()}.mp4"}
    video = c.post("/api/videos", json=body, headers=as_("alice"))
    assert video.status_code == 201
    video_id = video.json()["id"]
    return [
        c.get(f"/api/videos/{video_id}", headers=as_("mallory")),
        c.post(f"/api/videos/{video_id}/retry", headers=as_("mallory")),
    ]


def ssrf_at_registration(c: httpx.Client) -> list[httpx.Response]:
    return [
        c.post("/api/videos", json={"title": "pg", "url": "http://127.0.0.1:5432/"}, headers=as_("mallory"))
    ]


def no_identity(c: httpx.Client) -> list[httpx.Response]:
    bearer = {
        "Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
    }  # header mode: not an identity
    return [
        c.get("/workflows/any-route", headers=bearer),
        c.get("/delivery/prefetch", params={"route_id": "any-route"}),
        c.post("/api/videos", json={"title": "t", "url": "https://cdn.example.com/a.mp4"}),
        c.get("/v1/tickets"),
    ]


def forged_link(c: httpx.Client) -> list[httpx.Response]:
    return [c.get(f"{cdn_path('r1-a0')}?exp=9999999999&kid=k1&sig=AAAAAAAA")]


def order_enumeration(c: httpx.Client) -> list[httpx.Response]:
    # A new X-Forwarded-For per guess: not believed (no TRUSTED_PROXIES), the budget stays this client's.
    return [
        c.get(f"/order/{uuid.uuid4().hex}test", headers={"X-Forwarded-For": f"203.0.113.{n}"})
        for n in range(MISS_BUDGET + 2)
    ]


def huge_head(c: httpx.Client) -> list[httpx.Response]:
    return [c.get("/v1/tickets", headers={**as_("mallory"), "X-Padding": "x" * 64 * 1024})]


ATTACKS: dict[str, tuple[Callable[[httpx.Client], list[httpx.Response]], list[int]]] = {
    "operator role claimed from an untrusted peer": (claimed_operator, [403]),
    "another user's ticket (BOLA)": (someone_elses_ticket, [403]),
    "another user's video, read and retry (BOLA)": (someone_elses_video, [403, 403]),
    "SSRF to the database port at registration": (ssrf_at_registration, [422]),
    "no identity (or an unsigned bearer token)": (no_identity, [401] * 4),
    "forged signed link": (forged_link, [403]),
    "order uid enumeration, rotating X-Forwarded-For": (order_enumeration, [404] * MISS_BUDGET + [429] * 2),
    "64 KiB request head": (huge_head, [431]),
}


def test_attacks_across_the_services_get_the_status_that_stops_them_and_never_a_5xx(client):
    seen = {}
    for name, (attack, expected) in ATTACKS.items():
        responses = attack(client)
        statuses = [r.status_code for r in responses]
        seen[name] = statuses
        assert all(s < 500 for s in statuses), f"{name}: {statuses}"
        assert statuses == expected, f"{name}: {statuses} {[r.text[:200] for r in responses]}"
        for response in responses:
            if response.status_code == 431:  # the server's own answer: the app never saw the request
                assert response.content == b"" and response.headers["connection"] == "close"
                continue
            assert set(response.json()["error"]) >= {"code", "message", "request_id"}, name
        if 429 in statuses:
            assert int(responses[-1].headers["Retry-After"]) >= 1
    print("\n" + "\n".join(f"{name}: {statuses}" for name, statuses in seen.items()))
