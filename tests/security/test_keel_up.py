"""`keel up` on a non-loopback address: its dev bus door is shut (403 in the envelope, unless
KEEL_DEV_DOOR=1 opens it, with a warning), and with SECRET unset it signs with the secret it generated
for its data folder, so links forged with the seeds' `secret` are refused."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.core.devbus import dev_door_opens, is_loopback
from keel.core.runtime import build_app
from keel.core.settings import DEFAULT_SECRET
from keel.core.signing import UrlSigner
from keel.tickets.spec import SPEC as TICKETS
from tests.support.bus import read
from tests.support.servers import free_port, wait_for_port


@pytest.fixture
def keel_up_on_all_interfaces(fresh_pg_dsn: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`keel up --host 0.0.0.0` with SECRET unset; yields its loopback URL and data folder."""
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET", "KAFKA_", "TEST_", "KEEL_"))}
    env |= {"POSTGRES_DSN": fresh_pg_dsn, "KEEL_DATA_DIR": str(data), "TTS_MODE": "instant"}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "up", "--host", "0.0.0.0", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # The port opens once the lifespan has started every service.
        wait_for_port(port, deadline_s=180)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield base, data
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.timeout(300)
def test_keel_up_on_a_non_loopback_address_shuts_the_door_signs_with_its_own_secret_and_links_relatively(
    keel_up_on_all_interfaces,
):
    base, data = keel_up_on_all_interfaces
    generated = (data / "secret").read_text().strip()
    with httpx.Client(base_url=base, timeout=30) as client:
        door = client.post("/_dev/bus/tickets.events", content=b"{}")
        key = f"{uuid.uuid4().hex}.txt"
        forged = client.get(UrlSigner(DEFAULT_SECRET).sign(f"/files/{key}", 60).url())
        genuine = client.get(UrlSigner(generated).sign(f"/files/{key}", 60).url())
        # 0.0.0.0 names no address a client could reach: no PUBLIC_BASE_URL is made up, links stay relative.
        user = {"X-User-Id": "anyone"}
        ticket = client.post("/v1/tickets", json={"title": "Links", "description": "."}, headers=user).json()
        attached = client.post(
            f"/v1/tickets/{ticket['id']}/attachments", files={"file": ("a.txt", b"hi")}, headers=user
        ).json()
    assert attached["download_url"].startswith("/files/"), attached
    assert door.status_code == 403, door.text
    assert (
        door.json()["error"]["code"] == "forbidden" and "KEEL_DEV_DOOR=1" in door.json()["error"]["message"]
    )
    assert generated != DEFAULT_SECRET
    assert forged.status_code == 403, "a link signed with the seeds' `secret` must not verify"
    assert genuine.status_code == 404, "the generated secret verifies (the object does not exist)"
    print(
        f"\nkeel up --host 0.0.0.0: dev door {door.status_code}; link signed with 'secret' {forged.status_code}, "
        f"with the data folder's secret {genuine.status_code} (verified, no such object)"
    )


def test_the_door_opens_on_loopback_or_when_forced_with_a_warning(caplog):
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST."))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com"))
    with caplog.at_level(logging.WARNING, logger="keel.devbus"):
        assert dev_door_opens("127.0.0.1", forced=False) and not caplog.records
        assert not dev_door_opens("0.0.0.0", forced=False) and not caplog.records
        assert dev_door_opens("0.0.0.0", forced=True)
    [warning] = caplog.records
    assert "KEEL_DEV_DOOR" in warning.getMessage() and "0.0.0.0" in warning.getMessage()


async def test_a_shut_door_refuses_in_the_envelope_and_an_open_one_publishes(fresh_pg_dsn, make_settings):
    settings = make_settings(postgres_dsn=fresh_pg_dsn)
    shut = build_app([TICKETS], settings, embedded=True, dev_door=False)
    opened = build_app([TICKETS], settings, embedded=True, dev_door=True)
    async with shut.router.lifespan_context(shut), opened.router.lifespan_context(opened):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(shut), base_url="http://t") as client:
            refused = await client.post("/_dev/bus/tickets.events", content=b"{}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(opened), base_url="http://t") as client:
            published = await client.post("/_dev/bus/tickets.events", content=b"{}")
    assert refused.status_code == 403 and refused.json()["error"]["request_id"]
    assert published.status_code == 202


async def test_the_open_door_publishes_the_body_key_and_x_bus_headers_as_a_producer_would(
    fresh_pg_dsn, make_settings
):
    app = build_app([TICKETS], make_settings(postgres_dsn=fresh_pg_dsn), embedded=True, run_workers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        consumer = app.state.infra.bus.consumer(["tickets.events"], f"door-{uuid.uuid4().hex[:6]}")
        await consumer.start()
        try:
            sent = await client.post(
                "/_dev/bus/tickets.events",
                params={"key": "k-1"},
                content=b'{"hello": "bus"}',
                headers={
                    "X-Bus-Headers": '{"traceparent": "00-' + "ab" * 16 + "-" + "cd" * 8 + '-01", "x": "y"}'
                },
            )
            [message] = await read(consumer, 1)
        finally:
            await consumer.stop()
        malformed = await client.post(
            "/_dev/bus/tickets.events", content=b"{}", headers={"X-Bus-Headers": "[1]"}
        )
        unknown = await client.post("/_dev/bus/no.such.topic", content=b"{}")
    assert sent.status_code == 202, sent.text
    assert (message.key, message.value) == (b"k-1", b'{"hello": "bus"}')
    assert dict(message.headers) == {
        "traceparent": b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01",
        "x": b"y",
    }
    assert malformed.status_code == 422 and "X-Bus-Headers" in malformed.json()["error"]["message"]
    assert unknown.status_code == 404 and "tickets.events" in unknown.json()["error"]["message"]
