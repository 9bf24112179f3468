"""Attachments: bytes in object storage, metadata in PostgreSQL, expiring signed download links."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import pytest

from tests.integration.tickets.conftest import serving, ticket_body


async def _ticket(client, as_user) -> str:
    return (await client.post("/v1/tickets", json=ticket_body(), headers=as_user())).json()["id"]


async def test_upload_keeps_name_type_size_and_sha256_and_the_link_downloads_the_bytes(
    client, as_user, fresh_pg_dsn
):
    ticket_id = await _ticket(client, as_user)
    data = b"%PDF-1.7 " + bytes(range(256)) * 400
    response = await client.post(
        f"/v1/tickets/{ticket_id}/attachments",
        files={"file": ("report.pdf", data, "application/pdf")},
        headers=as_user(),
    )
    assert response.status_code == 201
    attachment = response.json()
    assert attachment["filename"] == "report.pdf"
    assert attachment["content_type"] == "application/pdf"
    assert attachment["size_bytes"] == len(data)
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
    assert attachment["url_expires_in"] > 0

    listed = (await client.get(f"/tickets/{ticket_id}/attachments", headers=as_user())).json()
    assert [a["id"] for a in listed] == [attachment["id"]]

    download = await client.get(listed[0]["download_url"])
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "application/pdf"

    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT size_bytes, sha256 FROM attachments WHERE id = $1::uuid", attachment["id"]
        )
    finally:
        await conn.close()
    assert row["size_bytes"] == len(data)  # metadata only: the bytes live in object storage


async def test_tampered_download_link_is_403(client, as_user):
    ticket_id = await _ticket(client, as_user)
    attachment = (
        await client.post(
            f"/v1/tickets/{ticket_id}/attachments",
            files={"file": ("a.txt", b"hello", "text/plain")},
            headers=as_user(),
        )
    ).json()
    url = attachment["download_url"]
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    forged = url.replace(f"sig={sig}", "sig=AAAAAAAA" if sig != "AAAAAAAA" else "sig=BBBBBBBB")
    response = await client.get(forged)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    other_file = url.replace(attachment["id"], "00000000-0000-0000-0000-000000000000")
    assert (await client.get(other_file)).status_code == 403


async def test_expired_download_link_is_410(fresh_pg_dsn, redis_url, make_settings, monkeypatch):

    monkeypatch.setenv("ATTACHMENT_LINK_TTL_S", "1")
    async with serving(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)) as (app, client):
        signer = app.state.url_signer
        headers = {"X-User-Id": "expiry-user"}
        ticket_id = (await client.post("/v1/tickets", json=ticket_body(), headers=headers)).json()["id"]
        attachment = (
            await client.post(
                f"/v1/tickets/{ticket_id}/attachments", files={"file": ("a.txt", b"x")}, headers=headers
            )
        ).json()
        # The clock moves past expiry plus the allowed skew.
        monkeypatch.setattr(signer, "_clock", lambda: 10**10)
        response = await client.get(attachment["download_url"])
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "gone"


async def test_attachment_over_the_limit_is_413_and_nothing_is_stored(
    fresh_pg_dsn, redis_url, make_settings, monkeypatch
):

    monkeypatch.setenv("MAX_ATTACHMENT_BYTES", "1000")
    async with serving(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url)) as (_, client):
        headers = {"X-User-Id": "big-upload-user"}
        ticket_id = (await client.post("/v1/tickets", json=ticket_body(), headers=headers)).json()["id"]
        response = await client.post(
            f"/v1/tickets/{ticket_id}/attachments",
            files={"file": ("big.bin", b"x" * 5000)},
            headers=headers,
        )
        listed = (await client.get(f"/v1/tickets/{ticket_id}/attachments", headers=headers)).json()
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert listed == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_another_users_attachments_are_403(client, as_user, user, method):
    ticket_id = await _ticket(client, as_user)
    files = {"file": ("a.txt", b"x")} if method == "POST" else None
    response = await client.request(
        method, f"/v1/tickets/{ticket_id}/attachments", files=files, headers=as_user(f"{user}-intruder")
    )
    assert response.status_code == 403


async def test_attachment_on_unknown_ticket_is_404(client, as_user):
    response = await client.post(
        "/v1/tickets/00000000-0000-0000-0000-000000000000/attachments",
        files={"file": ("a.txt", b"x")},
        headers=as_user(),
    )
    assert response.status_code == 404


async def test_the_download_link_answers_head_ranges_and_etag_and_names_the_original_file(client, as_user):
    ticket_id = await _ticket(client, as_user)
    data = bytes(range(256)) * 40
    name = 'отчёт "март";\r\nX-Evil: 1.pdf'
    attachment = (
        await client.post(
            f"/v1/tickets/{ticket_id}/attachments",
            files={"file": (name, data, "application/pdf")},
            headers=as_user(),
        )
    ).json()
    url = attachment["download_url"]
    whole = await client.get(url)
    head = await client.head(url)
    part = await client.get(url, headers={"Range": "bytes=100-199"})
    tail = await client.get(url, headers={"Range": "bytes=-10"})
    beyond = await client.get(url, headers={"Range": f"bytes={len(data)}-"})
    etag = whole.headers["etag"]
    unchanged = await client.get(url, headers={"If-None-Match": etag})
    stale_if_range = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"not-it"'})

    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    # The header as the client sees it: an ASCII stand-in, then the exact name (RFC 6266 / 8187).
    disposition = whole.headers["content-disposition"]
    fallback, exact = disposition.removeprefix("attachment; ").split("; filename*=UTF-8''")
    assert unquote(exact, errors="strict") == attachment["filename"] and "отчёт" in attachment["filename"]
    assert fallback.startswith('filename="') and fallback.endswith('"') and fallback[10:-1].isascii()
    assert '"' not in fallback[10:-1] and ";" not in fallback[10:-1]
    assert "x-evil" not in whole.headers
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data)) and head.headers["etag"] == etag
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert part.headers["content-length"] == "100"
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert stale_if_range.status_code == 200 and stale_if_range.content == data


async def test_attaching_to_a_closed_ticket_is_409_and_stores_nothing(client, as_user):
    ticket_id = await _ticket(client, as_user)
    assert (await client.post(f"/v1/tickets/{ticket_id}/close", headers=as_user())).status_code == 200
    response = await client.post(
        f"/v1/tickets/{ticket_id}/attachments", files={"file": ("late.txt", b"too late")}, headers=as_user()
    )
    listed = (await client.get(f"/v1/tickets/{ticket_id}/attachments", headers=as_user())).json()
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict" and "CLOSED" in response.json()["error"]["message"]
    assert listed == []
