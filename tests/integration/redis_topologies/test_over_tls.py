"""On one Redis that speaks TLS only (`rediss://`, a certificate from a CA the test makes, named in the
URL as redis-py reads it): the cache contract, rate limits, the tickets service's idempotency keys and
list cache, and the delivery pages, as on a plain server. A plaintext client on the port gets nowhere,
a client that does not trust the CA is refused, and a server that asks for client certificates takes
the one the URL names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from redis.exceptions import ConnectionError

from keel.core.ratelimit import redis_storage
from keel.core.redis_topology import RedisTopology
from tests.contract.test_cache_contract import *  # noqa: F403
from tests.integration.cityguide.test_ready_audio_store import *  # noqa: F403
from tests.integration.test_ratelimit import *  # noqa: F403
from tests.integration.tickets.conftest import *  # noqa: F403
from tests.integration.tickets.test_idempotency import *  # noqa: F403
from tests.integration.tickets.test_list_cache import *  # noqa: F403
from tests.support import servers


def _issued(ca: trustme.CA, folder: Path, name: str, *identities: str) -> tuple[Path, Path]:
    """(certificate, key) PEM files of a certificate `ca` issues for `identities`."""
    cert = ca.issue_cert(*identities)
    certfile, keyfile = folder / f"{name}.pem", folder / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


def _tls_only_redis(
    ca: trustme.CA, folder: Path, *, client_certificates: bool
) -> tuple[servers.ChildServer, Path]:
    """A redis-server with no plaintext port (--port 0) and a certificate from `ca`, asking clients for
    one of theirs or not; and the CA's certificate file."""
    cafile = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    certfile, keyfile = _issued(ca, folder, "server", "127.0.0.1", "localhost")
    server = servers.redis_server()
    server.argv += ["--port", "0", "--tls-port", str(server.port), "--tls-ca-cert-file", str(cafile)]
    server.argv += ["--tls-cert-file", str(certfile), "--tls-key-file", str(keyfile)]
    server.argv += ["--tls-auth-clients", "yes" if client_certificates else "no"]
    return server, cafile


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, the CA's certificate) of a redis-server listening for TLS only."""
    server, cafile = _tls_only_redis(
        trustme.CA(), tmp_path_factory.mktemp("redis-tls"), client_certificates=False
    )
    with servers.running(server):
        yield server.port, cafile


@pytest.fixture(scope="module")
def redis_url(tls_redis: tuple[int, Path]) -> str:
    port, cafile = tls_redis
    return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cafile}"


async def test_only_a_client_that_trusts_the_servers_ca_gets_in(tls_redis: tuple[int, Path]) -> None:
    port, cafile = tls_redis
    trusting = RedisTopology.parse(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cafile}").client()
    plaintext = RedisTopology.parse(f"redis://127.0.0.1:{port}/0").client(socket_timeout=2)
    stranger = RedisTopology.parse(f"rediss://127.0.0.1:{port}/0").client(socket_timeout=2)  # system CAs
    try:
        assert await trusting.ping()
        with pytest.raises(ConnectionError):
            await plaintext.ping()  # the server drops a client that does not speak TLS
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.ping()
    finally:
        for client in (trusting, plaintext, stranger):
            await client.aclose()


async def test_a_server_that_asks_for_client_certificates_takes_the_one_named_in_the_url(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    server, cafile = _tls_only_redis(ca, tmp_path, client_certificates=True)
    certfile, keyfile = _issued(ca, tmp_path, "client", "keel-client")
    trusting = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={cafile}"
    with_certificate = f"{trusting}&ssl_certfile={certfile}&ssl_keyfile={keyfile}"
    with servers.running(server):
        anonymous = RedisTopology.parse(trusting).client(socket_timeout=2)
        known = RedisTopology.parse(with_certificate).client(socket_timeout=2)
        try:
            with pytest.raises(ConnectionError):
                await anonymous.ping()
            assert await known.ping()
        finally:
            await anonymous.aclose()
            await known.aclose()
        # The rate limiter's own client reads the same URL.
        assert await redis_storage(with_certificate).incr("tls-probe", 60) == 1
