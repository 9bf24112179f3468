"""Slowloris: a Keel app served as `keel serve` serves it closes a connection whose request head is not
complete within HTTP_HEADER_TIMEOUT_S, while complete requests (even slow ones) are still served.
Raw sockets on loopback; the timeout is 1 s here so that the test is short."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from keel.core.app import create_app
from keel.core.settings import Settings
from tests.support.serving import served

TIMEOUT_S = 1.0
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: keel\r\n"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(_env_file=None, http_header_timeout_s=TIMEOUT_S)
    with served(create_app(title="slowloris", settings=settings), settings) as url:
        yield url


def connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: recv returns b'' (FIN) or the connection was reset."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def trickle_until_closed(sock: socket.socket, *, every_s: float = 0.2, give_up_s: float = 30.0) -> float:
    """Sends a header line every `every_s`, as slowloris does; the seconds until the server closed."""
    begin = time.monotonic()
    sock.sendall(PARTIAL_HEAD)
    sock.settimeout(every_s)
    n = 0
    while time.monotonic() - begin < give_up_s:
        if closed_by_server(sock):
            return time.monotonic() - begin
        n += 1
        try:
            sock.sendall(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - begin
    raise AssertionError(f"connection still open after {give_up_s}s of trickled headers")


def test_a_trickled_head_is_cut_off_and_an_idle_connection_too(base_url):
    with connect(base_url) as slow:
        slow_closed_s = trickle_until_closed(slow)
    with connect(base_url) as idle:
        begin = time.monotonic()
        idle.settimeout(30)
        assert closed_by_server(idle), "a connection that never sends a byte must be closed too"
        idle_closed_s = time.monotonic() - begin
    # Closed by the head deadline, not by anything earlier: the server's clock starts after our connect.
    assert slow_closed_s >= TIMEOUT_S * 0.9 and idle_closed_s >= TIMEOUT_S * 0.9
    print(
        f"\nslowloris (HTTP_HEADER_TIMEOUT_S={TIMEOUT_S:g}): trickled head closed after {slow_closed_s:.1f}s, "
        f"idle connection after {idle_closed_s:.1f}s"
    )


def test_complete_requests_are_served_while_many_slowloris_connections_are_cut_off(base_url):
    attackers = 50
    closed: list[float] = []

    def attack() -> None:
        with connect(base_url) as sock:
            closed.append(trickle_until_closed(sock, every_s=0.3))

    threads = [threading.Thread(target=attack) for _ in range(attackers)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        statuses = [client.get("/healthz").status_code for _ in range(20)]
    for t in threads:
        t.join(60)
    # A slow but complete head (three parts, well within the deadline) is a client, not an attack.
    with connect(base_url) as sock:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: keel\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(part)
            time.sleep(TIMEOUT_S / 10)  # pacing the client, not waiting for a result
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert statuses == [200] * 20
    assert len(closed) == attackers
    assert reply.startswith(b"HTTP/1.1 200")
    print(
        f"\nslowloris: {attackers} trickling connections all closed (slowest after {max(closed):.1f}s); "
        f"20/20 normal requests 200 meanwhile; a slow complete head 200"
    )


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(v)
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
        if k.lower() == b"content-length"
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_the_next_request_on_a_kept_alive_connection_has_its_own_head_deadline(base_url):
    with connect(base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: keel\r\n\r\n")
        first = read_response(sock)
        # Trickling bytes would reset an idle-connection timer; only the head deadline ends this.
        closed_s = trickle_until_closed(sock)
    assert first.startswith(b"HTTP/1.1 200")
    print(
        f"\nslowloris on a kept-alive connection: first request 200, trickled second head closed after {closed_s:.1f}s"
    )
