"""Downloading a video source without opening an SSRF hole.

Every hop is checked the same way: the host is resolved once (or parsed, when numeric in any of the
forms C's `inet_aton` accepts: `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`), every address is
classified, and the connection goes to the validated IP itself — the hostname travels only in the
`Host` header and TLS SNI, so a second DNS answer (rebinding) never matters. Redirects are followed
by hand (at most 5), each target checked again. Size and total time are capped.

The same policy judges a URL at registration (`POST /api/videos` answers 422), there without any
network I/O: `AddressGuard.check` refuses what it can decide from the URL alone — a scheme other than
http(s), credentials (`user:pass@`), a numeric host that is not public, a name that is never public
(`localhost` and `*.localhost`, a single label such as `postgres`, `*.local`, `*.internal`,
`*.home.arpa`) — and leaves names to the worker, which resolves them and checks every answer.

An entry of the explicit allow-list (VIDEO_FETCH_ALLOW_HOSTS, e.g. `127.0.0.1:8080` in tests) skips
the address classification for that host and port, nothing else. `host:port` admits that port; a bare
`host` admits only the scheme's default port (80, 443), never "any port of that host".

Why not httpx-secure 2.0 (evaluated from its source): it learns a name's address by opening a TCP
connection to it and checks the peer afterwards, so internal hosts are reached before the refusal;
integer and hex hosts (`2130706433`) take that same path; `is_global` on Python 3.11 passes 6to4
`2002:7f00:1::` (127.0.0.1 inside); and an allow-listed loopback host needs its global check off.
Here every check happens before any socket is opened.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
# Only digits, dots and hex notation: the shapes inet_aton may read as an IPv4 address.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.IGNORECASE)
# Names that never belong to a public host (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal).
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


class SourceRefused(Exception):
    """The source may never be fetched (a non-public address, a bad scheme): no retry can help."""


class FetchFailed(Exception):
    """The source could not be fetched (HTTP error, too large, too slow). The message is for the log;
    `public` is the `code: message` a caller may see (keel.videos.failures). `permanent`: the source
    itself said no (a 4xx, too large, a redirect loop) and asking again would get the same answer;
    otherwise (5xx, timeout, connection error) a later try may succeed."""

    def __init__(
        self,
        message: str,
        public: str = "source_unavailable: the source could not be downloaded",
        *,
        permanent: bool = False,
    ):
        super().__init__(message)
        self.public = public
        self.permanent = permanent


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host names, in any notation a resolver would accept; None for a name."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare.rstrip(".")))
        except OSError:
            raise SourceRefused(f"malformed numeric host {host!r}") from None
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why connecting to `ip` is refused, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"{ip} is an IPv4-mapped address"
        if any(ip in net for net in _NAT64):
            return f"{ip} is a NAT64 address"
        if ip.teredo is not None:
            return f"{ip} is a Teredo address"
        if ip in _SIX_TO_FOUR and ip.sixtofour is not None and refusal(ip.sixtofour):
            return f"{ip} embeds the non-public {ip.sixtofour} (6to4)"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved:
        return f"{ip} is not a public address"
    if not ip.is_global:  # CGNAT 100.64/10, documentation ranges, and whatever `is_global` adds later
        return f"{ip} is not globally routable"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one hop really connects: the URL with the validated IP, and the name for Host and SNI."""

    url: httpx.URL
    host: str
    ip: str


def parse_allow_entry(entry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, or a bare `host` / IPv6 literal (port None: the default port only)."""
    text = entry.strip().lower()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
        if rest and (not rest.startswith(":") or not port_text):
            raise ValueError(f"bad allow-list entry {entry!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ValueError(f"bad allow-list entry {entry!r}: a port after ':'")
    else:
        host, port_text = text, ""  # a name, an IPv4 literal, or a bare IPv6 literal
    host = host.rstrip(".")
    if not host or (port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536)):
        raise ValueError(f"bad allow-list entry {entry!r}: host or host:port")
    return host, int(port_text) if port_text else None


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _never_public_name(host: str) -> bool:
    return host == "localhost" or "." not in host or host.endswith(_INTERNAL_SUFFIXES)


class AddressGuard:
    def __init__(self, allow_hosts: Collection[str] = (), resolver: Resolver = system_resolver) -> None:
        self.allow = frozenset(parse_allow_entry(h) for h in allow_hosts)
        self.resolver = resolver

    def _allowed(self, host: str, port: int, scheme: str) -> bool:
        if (host, port) in self.allow:
            return True
        return port == _default_port(scheme) and (host, None) in self.allow

    def check(self, url: httpx.URL) -> IPAddress | None:
        """What the policy decides from the URL alone, with no network I/O: SourceRefused, or the
        numeric host's address (already judged), or None for a name the resolver must judge."""
        if url.scheme not in ("http", "https"):
            raise SourceRefused(f"scheme {url.scheme!r} is not allowed")
        if url.userinfo:
            raise SourceRefused("credentials in the URL are not accepted")
        host = url.host.lower().rstrip(".")
        if not host:
            raise SourceRefused("URL has no host")
        port = url.port or _default_port(url.scheme)
        literal = numeric_host(host)
        names = {host} if literal is None else {host, str(literal)}
        if any(self._allowed(name, port, url.scheme) for name in names):
            return literal
        if literal is not None:
            reason = refusal(literal)
            if reason is not None:
                raise SourceRefused(f"refused {host!r}: {reason}")
        elif _never_public_name(host):
            raise SourceRefused(f"refused {host!r}: not a public host name")
        return literal

    async def admit(self, url: httpx.URL) -> Target:
        """The URL rewritten to a validated IP, or SourceRefused. The only network I/O is DNS."""
        literal = self.check(url)
        host = url.host.lower().rstrip(".")
        port = url.port or _default_port(url.scheme)
        allowed = self._allowed(host, port, url.scheme) or (
            literal is not None and self._allowed(str(literal), port, url.scheme)
        )
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                answers = await self.resolver(host, port)
            except OSError as exc:
                raise FetchFailed(f"cannot resolve {host!r}: {exc}") from None
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
        if not addresses:
            raise FetchFailed(f"{host!r} resolved to no address")
        if not allowed:
            # Every answer must be public: a name that also resolves to an internal address is refused
            # (picking the public one would leave the choice to whoever controls the DNS).
            for address in addresses:
                reason = refusal(address)
                if reason is not None:
                    raise SourceRefused(f"refused {host!r}: {reason}")
        ip = str(addresses[0])
        return Target(url=url.copy_with(host=ip), host=url.host, ip=ip)


class GuardedFetcher:
    """Downloads through `AddressGuard` with size and time caps; `transport` is for tests."""

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] = (),
        max_bytes: int,
        timeout_s: float,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.guard = AddressGuard(allow_hosts, resolver)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.transport = transport

    async def download(self, url: str, dest: Path) -> int:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(httpx.URL(url), dest)
        except TimeoutError:
            raise FetchFailed(
                f"download took longer than {self.timeout_s:g}s",
                f"source_timeout: the download took longer than {self.timeout_s:g}s",
            ) from None
        except httpx.InvalidURL as exc:
            raise SourceRefused(f"invalid URL: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None

    async def _follow(self, url: httpx.URL, dest: Path) -> int:
        async with httpx.AsyncClient(
            transport=self.transport, follow_redirects=False, trust_env=False, timeout=self.timeout_s
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target = await self.guard.admit(url)
                request = client.build_request(
                    "GET",
                    target.url,
                    # Raw bytes are counted against the cap: no compressed bomb expands past it.
                    headers={"Host": _host_header(url), "Accept-Encoding": "identity"},
                    extensions={"sni_hostname": target.host},
                )
                response = await client.send(request, stream=True)
                try:
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        url = url.join(response.headers["location"])
                        continue
                    if response.status_code != 200:
                        status = f"the source answered HTTP {response.status_code}"
                        raise FetchFailed(
                            status, f"source_http_error: {status}", permanent=_refused(response.status_code)
                        )
                    return await self._save(response, dest)
                finally:
                    await response.aclose()
        raise FetchFailed(
            f"more than {MAX_REDIRECTS} redirects",
            f"source_redirects: more than {MAX_REDIRECTS} redirects",
            permanent=True,
        )

    async def _save(self, response: httpx.Response, dest: Path) -> int:
        declared = response.headers.get("content-length")
        too_large = f"source_too_large: the source is larger than {self.max_bytes} bytes"
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchFailed(
                f"source is {declared} bytes; the limit is {self.max_bytes}", too_large, permanent=True
            )
        size = 0
        with dest.open("wb") as out:
            async for chunk in response.aiter_raw(CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchFailed(
                        f"source is larger than {self.max_bytes} bytes", too_large, permanent=True
                    )
                out.write(chunk)
        return size


def _refused(status: int) -> bool:
    """A 4xx is the source's answer about this URL; 408 and 429 only ask to come back later."""
    return 400 <= status < 500 and status not in (408, 429)


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    default = 443 if url.scheme == "https" else 80
    return host if url.port in (None, default) else f"{host}:{url.port}"
