"""The SSRF guard decides before any connection: every non-public address form is refused with no
network I/O at all (the resolver is a table, the transport fails the test if it is ever reached), and
an admitted host is connected to by its validated IP, resolved once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from keel.videos.fetch import AddressGuard, FetchFailed, GuardedFetcher, SourceRefused, parse_allow_entry

PUBLIC_IP = "93.184.216.34"
DNS = {
    "video.example": [PUBLIC_IP],
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": [PUBLIC_IP, "127.0.0.1"],
    "mapped.example": ["::ffff:127.0.0.1"],
}


class TableResolver:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in DNS:
            raise OSError(f"unknown host {host}")
        return DNS[host]


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Answers only requests to the public test IP; reaching it with anything else fails the test."""

    def __init__(self, handler=None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler or (
            lambda request: httpx.Response(200, stream=httpx.ByteStream(b"video-bytes"))
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == PUBLIC_IP, f"connection attempted to {request.url.host}"
        return self.handler(request)


def fetcher(transport: httpx.AsyncBaseTransport, resolver: TableResolver, **kw) -> GuardedFetcher:
    return GuardedFetcher(
        max_bytes=kw.pop("max_bytes", 1000), timeout_s=5, resolver=resolver, transport=transport, **kw
    )


REFUSED = [
    "http://127.0.0.1/a.mp4",
    "http://10.0.0.5/a.mp4",
    "http://172.16.0.1/a.mp4",
    "http://192.168.1.1/a.mp4",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.mp4",  # CGNAT
    "http://224.0.0.1/a.mp4",  # multicast
    "http://240.0.0.1/a.mp4",  # reserved
    "http://0.0.0.0/a.mp4",
    "http://[::1]/a.mp4",
    "http://[::]/a.mp4",
    "http://[fe80::1]/a.mp4",
    "http://[fc00::1]/a.mp4",
    "http://[ff02::1]/a.mp4",
    "http://[::ffff:127.0.0.1]/a.mp4",  # IPv4-mapped
    "http://[::ffff:169.254.169.254]/a.mp4",
    "http://[64:ff9b::a9fe:a9fe]/a.mp4",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::808:808]/a.mp4",  # NAT64 as a whole: reached through a translator
    "http://[2002:7f00:1::]/a.mp4",  # 6to4 embedding 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/a.mp4",  # Teredo
    "http://2130706433/a.mp4",  # 127.0.0.1 as one integer
    "http://0x7f000001/a.mp4",  # hex
    "http://0177.0.0.1/a.mp4",  # octal
    "http://017700000001/a.mp4",  # octal integer
    "http://127.1/a.mp4",  # short form
    "http://0xa9.0xfe.0xa9.0xfe/latest/",  # 169.254.169.254 in hex parts
    "http://internal.example/a.mp4",
    "http://metadata.example/latest/meta-data/",
    "http://mixed.example/a.mp4",  # one private answer is enough to refuse
    "http://mapped.example/a.mp4",
    "ftp://video.example/a.mp4",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_non_public_address_forms_are_refused_without_any_connection(url: str, tmp_path: Path):
    transport, resolver = PublicOnlyTransport(), TableResolver()
    with pytest.raises(SourceRefused):
        await fetcher(transport, resolver).download(url, tmp_path / "out")
    assert transport.requests == []
    assert not (tmp_path / "out").exists()
    # Numeric hosts are decided without even a DNS query.
    if "example" not in url:
        assert resolver.calls == []


async def test_admitted_host_is_connected_by_its_validated_ip_resolved_once(tmp_path: Path):
    transport, resolver = PublicOnlyTransport(), TableResolver()
    size = await fetcher(transport, resolver).download("https://video.example/v.mp4?x=1", tmp_path / "out")
    assert size == len(b"video-bytes") and (tmp_path / "out").read_bytes() == b"video-bytes"
    assert resolver.calls == ["video.example"]  # no second lookup (DNS rebinding has no window)
    (request,) = transport.requests
    assert str(request.url) == f"https://{PUBLIC_IP}/v.mp4?x=1"
    assert request.headers["host"] == "video.example"
    assert request.extensions["sni_hostname"] == "video.example"


async def test_redirect_to_the_metadata_address_is_refused_at_the_hop(tmp_path: Path):
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    transport = PublicOnlyTransport(redirect)
    with pytest.raises(SourceRefused, match=r"169\.254\.169\.254"):
        await fetcher(transport, TableResolver()).download("http://video.example/v.mp4", tmp_path / "out")
    assert len(transport.requests) == 1


async def test_more_than_five_redirects_fail(tmp_path: Path):
    transport = PublicOnlyTransport(lambda r: httpx.Response(302, headers={"Location": "/again"}))
    with pytest.raises(FetchFailed, match="redirects"):
        await fetcher(transport, TableResolver()).download("http://video.example/v.mp4", tmp_path / "out")
    assert len(transport.requests) == 6


async def test_bodies_over_the_size_cap_fail_declared_or_streamed(tmp_path: Path):
    declared = PublicOnlyTransport(
        lambda r: httpx.Response(200, headers={"Content-Length": "5000"}, stream=httpx.ByteStream(b""))
    )
    with pytest.raises(FetchFailed, match="limit"):
        await fetcher(declared, TableResolver()).download("http://video.example/v.mp4", tmp_path / "a")

    async def endless():
        for _ in range(100):
            yield b"x" * 100

    streamed = PublicOnlyTransport(lambda r: httpx.Response(200, content=endless()))
    with pytest.raises(FetchFailed, match="larger than 1000"):
        await fetcher(streamed, TableResolver()).download("http://video.example/v.mp4", tmp_path / "b")


async def test_allow_listed_host_skips_only_the_address_check(tmp_path: Path):
    seen: list[str] = []

    class Loopback(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

    guarded = GuardedFetcher(
        allow_hosts={"127.0.0.1:8080"},
        max_bytes=10,
        timeout_s=5,
        resolver=TableResolver(),
        transport=Loopback(),
    )
    assert await guarded.download("http://127.0.0.1:8080/v.mp4", tmp_path / "a") == 2
    # The allow-list names a host and port, not "anything": other ports and addresses stay refused.
    for url in ("http://10.0.0.1/v.mp4", "http://127.0.0.1:5432/", "http://127.0.0.1/v.mp4"):
        with pytest.raises(SourceRefused):
            await guarded.download(url, tmp_path / "b")
    assert seen == ["http://127.0.0.1:8080/v.mp4"]


@pytest.mark.parametrize(
    ("entry", "admitted", "refused"),
    [
        (
            "127.0.0.1",
            ["http://127.0.0.1/v", "https://127.0.0.1/v", "http://127.0.0.1:80/v"],
            ["http://127.0.0.1:8080/v"],
        ),
        ("127.0.0.1:8080", ["http://127.0.0.1:8080/v"], ["http://127.0.0.1/v", "http://127.0.0.1:8081/v"]),
        ("[::1]:9000", ["http://[::1]:9000/v"], ["http://[::1]/v"]),
        ("::1", ["http://[::1]/v"], ["http://[::1]:9000/v"]),
        ("minio:9000", ["http://minio:9000/v"], ["http://minio/v", "http://minio:9001/v"]),
    ],
)
def test_the_allow_list_is_host_and_port_and_a_bare_host_is_its_default_port(entry, admitted, refused):
    guard = AddressGuard([entry], resolver=TableResolver())
    for url in admitted:
        guard.check(httpx.URL(url))
    for url in refused:
        with pytest.raises(SourceRefused):
            guard.check(httpx.URL(url))


STATICALLY_REFUSED = [
    "http://10.0.0.1/a.mp4",
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:5432/",
    "http://2130706433/",
    "http://localhost:6379/",
    "http://api.localhost/",
    "http://postgres:5432/",  # one label: a name only an internal resolver knows
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/",
    "http://router.home.arpa/",
    "http://user:pass@video.example/a.mp4",
    "http://token@video.example/a.mp4",
    "gopher://video.example/",
]


@pytest.mark.parametrize("url", STATICALLY_REFUSED)
def test_what_registration_refuses_is_decided_from_the_url_alone(url):
    resolver = TableResolver()
    with pytest.raises(SourceRefused):
        AddressGuard(resolver=resolver).check(httpx.URL(url))
    assert resolver.calls == []


def test_a_public_looking_name_is_left_to_the_worker_without_a_lookup():
    resolver = TableResolver()
    guard = AddressGuard(resolver=resolver)
    assert guard.check(httpx.URL("https://internal.example/a.mp4")) is None  # the worker resolves it
    assert str(guard.check(httpx.URL(f"http://{PUBLIC_IP}/a.mp4"))) == PUBLIC_IP
    assert resolver.calls == []


@pytest.mark.parametrize("entry", ["", "host:", "host:0", "host:70000", "[::1]x", "[::1]:"])
def test_a_malformed_allow_list_entry_is_refused(entry):
    with pytest.raises(ValueError):
        parse_allow_entry(entry)
