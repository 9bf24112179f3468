"""Request heads are bounded: a head over MAX_HEADER_BYTES gets 431 and the connection is closed after
about the limit has been read — an 8 MB header line is not buffered — while heads under the limit are
served; a request the HTTP parser refuses gets 400. The server writes both itself, with an empty body:
the app never sees such a request (docs/security.md). Raw sockets on loopback against an app served
as `keel serve` serves it (keel.core.http_server)."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psutil
import pytest

from keel.core.app import create_app
from keel.core.settings import Settings
from tests.support.serving import served

LIMIT = 16 * 1024  # the default MAX_HEADER_BYTES
HUGE = 8 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(_env_file=None)
    assert settings.max_header_bytes == LIMIT
    with served(create_app(title="heads", settings=settings), settings) as url:
        yield url


def connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    # A small send buffer: what the client has sent is close to what the server has been offered.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply


def split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_refused(reply: bytes, status: int) -> None:
    """The server's own answer to a head it will not pass on: the status, no body, the connection closed."""
    got, headers, body = split(reply)
    assert got == status, reply[:200]
    assert headers["connection"] == "close" and headers["content-length"] == "0" and body == b"", reply[:200]


def request(base_url: str, head: bytes) -> bytes:
    with connect(base_url) as sock:
        sock.sendall(head)
        return read_until_closed(sock)


def test_a_head_under_the_limit_is_served_and_one_over_it_is_431(base_url):
    under = request(
        base_url,
        b"GET /healthz HTTP/1.1\r\nHost: k\r\nX-Big: " + b"a" * 12_000 + b"\r\nConnection: close\r\n\r\n",
    )
    over = request(
        base_url, b"GET /healthz HTTP/1.1\r\nHost: k\r\nX-Big: " + b"a" * (LIMIT + 1) + b"\r\n\r\n"
    )
    many = b"".join(b"X-H%d: %s\r\n" % (n, b"b" * 100) for n in range(200))  # 200 small headers: ~21 KB
    split_over = request(base_url, b"GET /healthz HTTP/1.1\r\nHost: k\r\n" + many + b"\r\n")
    assert under.startswith(b"HTTP/1.1 200")
    assert json.loads(split(under)[2]) == {"status": "ok"}
    for reply in (over, split_over):
        assert_refused(reply, 431)
    print("\nheads: 12 KB header → 200; one 16 KB+1 header → 431; 200 headers of 100 B → 431")


def test_an_8_mb_header_line_is_cut_off_after_about_the_limit_and_not_buffered(base_url):
    process = psutil.Process()
    rss_before = process.memory_info().rss
    sent = 0
    reply = b""
    chunk = b"a" * CHUNK
    with connect(base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: k\r\nX-Huge: ")
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        while sent < HUGE and time.monotonic() < deadline:
            try:
                reply += sock.recv(65536)
                break  # the server has answered: it will read no more of this head
            except BlockingIOError:
                pass
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                # The send buffer is full: wait until the server reads some, or answers.
                select.select([sock], [sock], [], 1.0)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(30)
        sock.setblocking(True)
        reply += read_until_closed(sock)
    grown = process.memory_info().rss - rss_before
    assert_refused(reply, 431)
    # Closed after about the limit (plus what sits in socket buffers), nowhere near the 8 MB offered.
    assert sent < 1024 * 1024, f"the client could send {sent} bytes before the server answered"
    assert grown < HUGE // 2, f"RSS grew by {grown} bytes"
    print(
        f"\nheads: 8 MB header line → 431 after the client had sent {sent / 1024:.0f} KiB; "
        f"RSS grew {grown / 1024:.0f} KiB"
    )


def test_a_request_the_parser_refuses_is_400(base_url):
    replies = [
        request(base_url, b"GET /healthz HTTP/1.1\r\nHost: k\r\nBad Header: x\r\n\r\n"),
        request(base_url, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS to a plain port\r\n\r\n"),
    ]
    for reply in replies:
        assert_refused(reply, 400)
    print("\nheads: malformed header name and TLS on the plain port → 400")


def test_kept_alive_requests_each_get_the_limit_afresh(base_url):
    header = b"X-Big: " + b"a" * 10_000 + b"\r\n"  # 10 KB each: two would pass the limit together
    with connect(base_url) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: k\r\n" + header + b"\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
    print("\nheads: three kept-alive requests of 10 KB heads each → 200")
