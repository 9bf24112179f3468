"""Who may call what (docs/security.md) and the per-client limits, on the five HTTP services served in
one app as `keel serve` serves it (AUTH_MODE=header, no TRUSTED_PROXIES, ORDERS_AUTH=user),
with limits low enough to reach; and the trusted-peer rule for X-User-Roles on a small app served
with and without TRUSTED_PROXIES."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, Request

from keel import services
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.core.app import create_app
from keel.core.identity import Operator, build_authenticator
from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import order_json, parse_order
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec
from tests.support.serving import served

pytestmark = pytest.mark.timeout(300)

HTTP_SERVICES = ("tickets", "orders", "videos", "orchestrator", "delivery-prefetch")
LIMITS = {
    "ORDERS_AUTH": "user",
    "ORDER_MISS_LIMIT": "3/minute",
    "ORDER_LOOKUP_LIMIT": "4/minute",
    "WORKFLOW_READ_LIMIT": "3/minute",
    "WORKFLOW_READ_ADDRESS_LIMIT": "10/minute",
    "VIDEO_CREATE_ADDRESS_LIMIT": "8/minute",
    "VIDEOS_PER_USER_PER_HOUR": "2",
    "ATTACHMENTS_PER_TICKET": "2",
    "ATTACHMENT_BYTES_PER_USER": "1000",
    "TICKETS_RATE_LIMIT": "",
}


@pytest.fixture(scope="module")
def base(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings.model_validate(
        {
            "postgres_dsn": pg_dsn,
            "secret": "access-test-secret",
            "data_dir": tmp_path_factory.mktemp("access"),
        }
    )
    with pytest.MonkeyPatch.context() as env:
        for name, value in LIMITS.items():
            env.setenv(name, value)
        # The video spec's settings are read when its module is imported: build it under these.
        specs = [build_spec(VideoSettings()) if n == "videos" else services.load(n) for n in HTTP_SERVICES]
        app = build_app(specs, settings, run_workers=False)
        with served(app, settings) as url:
            yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client


@pytest.fixture
def elsewhere(base: str) -> Iterator[httpx.Client]:
    """A client from a loopback address of its own (127.0.0.2-254): a fresh budget for per-address limits."""
    source = f"127.0.0.{random.randint(2, 254)}"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base, timeout=30, transport=transport) as client:
        yield client


def user() -> dict[str, str]:
    return {"X-User-Id": f"u-{uuid.uuid4().hex[:10]}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["request_id"] == response.headers["x-request-id"], error
    return error


def until_429(send: Any, most: int) -> list[httpx.Response]:
    """Sends until a 429 (at most `most` times); the answers."""
    answers = []
    for _ in range(most):
        answers.append(send())
        if answers[-1].status_code == 429:
            break
    return answers


def assert_limited(answers: list[httpx.Response], limit: str) -> None:
    last = answers[-1]
    error = assert_error(last, 429, "rate_limited")
    assert int(last.headers["Retry-After"]) >= 1 and limit in error["message"], error


# --- who may call what --------------------------------------------------------------------------


def test_a_restart_needs_the_operator_role_and_roles_from_an_untrusted_peer_are_ignored(client):
    anonymous = client.post("/workflows/r1/restart?step=tts_batch")
    claimed = client.post(
        "/workflows/r1/restart?step=tts_batch", headers={**user(), "X-User-Roles": "operator"}
    )
    assert_error(anonymous, 401, "unauthorized")
    error = assert_error(claimed, 403, "forbidden")
    assert "operator" in error["message"]


def test_workflow_reads_and_prefetch_need_an_authenticated_caller(client):
    assert_error(client.get("/workflows/r1"), 401, "unauthorized")
    assert_error(client.get("/delivery/prefetch", params={"route_id": "r1"}), 401, "unauthorized")
    assert client.get("/delivery/prefetch", params={"route_id": "r1"}, headers=user()).status_code == 200


def test_a_video_is_its_creators_to_read_and_retry(client):
    owner, other = user(), user()
    created = client.post(
        "/api/videos",
        json={"title": "mine", "url": f"https://cdn.example.com/{uuid.uuid4()}.mp4"},
        headers=owner,
    )
    assert created.status_code == 201, created.text
    video_id = created.json()["id"]
    mine = client.get(f"/api/videos/{video_id}", headers=owner)
    assert mine.status_code == 200 and mine.json()["owner"] == owner["X-User-Id"]
    assert_error(client.get(f"/api/videos/{video_id}", headers=other), 403, "forbidden")
    assert_error(client.post(f"/api/videos/{video_id}/retry", headers=other), 403, "forbidden")
    assert_error(
        client.post("/api/videos", json={"title": "t", "url": "https://cdn.example.com/x.mp4"}),
        401,
        "unauthorized",
    )


@pytest.fixture(scope="module")
def orders_of(pg_dsn: str, base: str) -> dict[str, str]:
    """customer → the uid of an order of theirs, written as the ingest consumer writes orders."""
    rng = random.Random(22)
    orders = [customers_order(who, rng) for who in ("carol", "erin")]
    store_orders(pg_dsn, orders)
    return {order["customer_id"]: order["order_uid"] for order in orders}


def customers_order(customer: str, rng: random.Random) -> Any:
    return parse_order(
        {**fake_order(rng, order_uid=f"{customer}{uuid.uuid4().hex[:12]}"), "customer_id": customer}
    )


def store_orders(dsn: str, orders: list[Any]) -> None:
    """As the ingest consumer writes them."""

    async def insert() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await repository.upsert_orders(conn, [order_json(o) for o in orders])
        finally:
            await conn.close()

    asyncio.run(insert())


def test_with_orders_auth_user_an_order_is_its_customers_and_a_strangers_404_says_nothing_more(
    client, orders_of
):
    carols_order = orders_of["carol"]
    mine = client.get(f"/order/{carols_order}", headers={"X-User-Id": "carol"})
    stranger = client.get(f"/order/{carols_order}", headers={"X-User-Id": "dave"})
    unknown = client.get("/order/no-such-order", headers={"X-User-Id": "dave"})
    assert mine.status_code == 200 and mine.json()["customer_id"] == "carol"
    assert_error(client.get(f"/order/{carols_order}"), 401, "unauthorized")
    assert_error(stranger, 404, "not_found")
    assert_error(unknown, 404, "not_found")
    assert stranger.json()["error"]["message"].replace(carols_order, "X") == unknown.json()["error"][
        "message"
    ].replace("no-such-order", "X")


# --- per-client limits and quotas ---------------------------------------------------------------


def test_order_lookups_are_limited_per_user(client, orders_of):
    erin = {"X-User-Id": "erin"}
    answers = until_429(lambda: client.get(f"/order/{orders_of['erin']}", headers=erin), most=6)
    assert [a.status_code for a in answers[:-1]] == [200] * 4
    assert_limited(answers, "4/minute")


def test_workflow_reads_are_limited_per_user(client):
    reader = user()
    answers = until_429(lambda: client.get("/workflows/unknown-route", headers=reader), most=5)
    assert [a.status_code for a in answers[:-1]] == [404] * 3
    assert_limited(answers, "3/minute")
    assert client.get("/workflows/unknown-route", headers=user()).status_code == 404, "per user"


def test_workflow_reads_are_limited_per_address_across_fresh_users(elsewhere):
    answers = until_429(lambda: elsewhere.get("/workflows/unknown-route", headers=user()), most=12)
    assert [a.status_code for a in answers[:-1]] == [404] * 10
    assert_limited(answers, "10/minute")


def video(n: int) -> dict[str, str]:
    return {"title": f"v{n}", "url": f"https://cdn.example.com/{uuid.uuid4()}.mp4"}


def test_videos_per_user_per_hour_is_a_quota_answered_429(client):
    creator = user()
    answers = until_429(lambda: client.post("/api/videos", json=video(0), headers=creator), most=4)
    assert [a.status_code for a in answers[:-1]] == [201, 201]
    assert_limited(answers, "2/hour")


def test_video_creates_are_limited_per_address_across_fresh_users(client):
    answers = until_429(lambda: client.post("/api/videos", json=video(1), headers=user()), most=10)
    assert {a.status_code for a in answers[:-1]} == {201}
    assert_limited(answers, "8/minute")


def new_ticket(client: httpx.Client, caller: dict[str, str]) -> str:
    created = client.post("/v1/tickets", json={"title": "quota", "description": "q"}, headers=caller)
    assert created.status_code == 201, created.text
    ticket_id: str = created.json()["id"]
    return ticket_id


def attach(client: httpx.Client, caller: dict[str, str], ticket_id: str, size: int) -> httpx.Response:
    files = {"file": ("a.bin", b"x" * size, "application/octet-stream")}
    return client.post(f"/v1/tickets/{ticket_id}/attachments", files=files, headers=caller)


def test_a_ticket_holds_attachments_per_ticket_at_most(client):
    caller = user()
    ticket_id = new_ticket(client, caller)
    statuses = [attach(client, caller, ticket_id, 10).status_code for _ in range(2)]
    error = assert_error(attach(client, caller, ticket_id, 10), 409, "quota_exceeded")
    assert statuses == [201, 201] and "ATTACHMENTS_PER_TICKET" in error["message"]


def test_a_user_uploads_attachment_bytes_per_user_at_most_and_nothing_over_is_kept(client):
    caller = user()
    first, second = new_ticket(client, caller), new_ticket(client, caller)
    assert attach(client, caller, first, 600).status_code == 201
    error = assert_error(attach(client, caller, second, 600), 409, "quota_exceeded")
    assert "ATTACHMENT_BYTES_PER_USER" in error["message"]
    assert client.get(f"/v1/tickets/{second}/attachments", headers=caller).json() == []
    assert attach(client, caller, second, 400).status_code == 201, "what is left of the quota still fits"


# --- X-User-Roles and the TCP peer --------------------------------------------------------------


def roles_app(settings: Settings) -> Any:
    router = APIRouter()

    @router.post("/ops")
    async def ops(request: Request, operator: Operator) -> dict[str, Any]:
        return {"operator": operator.user, "client": request.client.host if request.client else None}

    return create_app(title="roles", settings=settings, routers=[router])


@pytest.mark.parametrize("trusted", ["", "127.0.0.1/32"], ids=["no trusted proxy", "loopback trusted"])
def test_roles_are_believed_from_a_trusted_peer_only_even_when_it_forwards_another_client(trusted):
    settings = Settings.model_validate({"trusted_proxies": trusted, "secret": "roles-test-secret"})
    headers = {"X-User-Id": "olga", "X-User-Roles": "operator", "X-Forwarded-For": "203.0.113.7"}
    with served(roles_app(settings), settings) as url:
        response = httpx.post(f"{url}/ops", headers=headers, timeout=30)
    if trusted:  # the proxy's roles stand, and the client is the one it forwarded
        assert response.json() == {"operator": "olga", "client": "203.0.113.7"}
    else:
        assert_error(response, 403, "forbidden")


def test_found_orders_do_not_spend_the_miss_budget(pg_dsn, elsewhere):
    """From an address of its own: a customer reads their order up to their lookup limit, and the
    address still has its whole budget of misses."""
    order = customers_order("frank", random.Random(7))
    store_orders(pg_dsn, [order])
    frank = {"X-User-Id": "frank"}
    found = [elsewhere.get(f"/order/{order['order_uid']}", headers=frank).status_code for _ in range(4)]
    assert found == [200] * 4
    answers = until_429(lambda: elsewhere.get(f"/order/guess-{uuid.uuid4().hex}", headers=user()), most=5)
    assert [a.status_code for a in answers[:-1]] == [404] * 3, "the four found orders took none of the three"
    assert_limited(answers, "3/minute")


def test_order_misses_are_limited_per_address_whoever_asks(client):
    """Last of the order tests: once over, this address reads no order from the database for a
    minute (the budget is checked before the read), its own included."""
    answers = until_429(lambda: client.get(f"/order/guess-{uuid.uuid4().hex}", headers=user()), most=5)
    # Other tests' misses from this address count too: at most the budget of 404s before the 429.
    assert all(a.status_code == 404 for a in answers[:-1])
    assert_limited(answers, "3/minute")


def test_keel_serve_in_header_mode_without_trusted_proxies_warns_once_at_start(caplog):
    settings = Settings.model_validate({"secret": "warning-test-secret"})
    with caplog.at_level("WARNING", logger="keel.runtime"):
        build_app([DELIVERY], settings)  # `keel serve delivery-prefetch`
        build_app([DELIVERY], settings, embedded=True)  # `keel up`: no warning
        build_app([DELIVERY], Settings.model_validate({"secret": "w" * 20, "trusted_proxies": "10.0.0.0/8"}))
    warnings = [r.getMessage() for r in caplog.records if "TRUSTED_PROXIES" in r.getMessage()]
    assert len(warnings) == 1 and "AUTH_MODE=header" in warnings[0], warnings


@pytest.mark.parametrize(("peer", "status"), [("127.0.0.1", 200), ("203.0.113.5", 403)])
async def test_under_keel_up_a_loopback_caller_of_an_operator_route_is_an_operator(peer, status):
    settings = Settings.model_validate({"secret": "keel-up-operator-secret"})
    app = roles_app(settings)
    app.state.authenticator = build_authenticator(settings, embedded=True)
    transport = httpx.ASGITransport(app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        response = await client.post("/ops", headers={"X-User-Id": "dev"})
    assert response.status_code == status, response.text
