"""Hosted-Kafka security against Apache Kafka's own SASL_SSL listener: SCRAM-SHA-512 users, a
certificate from a CA the test makes. Right credentials connect; a wrong password or a plaintext
client on the TLS port fails within seconds with one line, and no secret reaches a log line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from keel.core.bus import OutgoingMessage
from keel.core.bus.errors import BrokerUnavailable
from keel.core.bus.kafka import KafkaBus
from keel.core.bus.security import KafkaSecurity
from keel.core.settings import Settings
from tests.support import servers
from tests.support.bus import read
from tests.support.eventually import eventually

if TYPE_CHECKING:
    from tests.support.apache_kafka import KafkaNode, Scram

PASSWORD = "s3cr3t-" + uuid.uuid4().hex[:8]
DOOMED = "doomed-" + uuid.uuid4().hex[:8]  # the password of a user a test revokes


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[trustme.CA, Path]]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield ca, path


def _pem_pair(cert: trustme.LeafCert, folder: Path, name: str) -> tuple[Path, Path]:
    """(chain, PKCS#8 key) PEM files of `cert`: Kafka's PEM key store reads PKCS#8 keys only."""
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    certfile, keyfile = folder / f"{name}.pem", folder / f"{name}.key"
    keyfile.write_bytes(pkcs8)
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return certfile, keyfile


@pytest.fixture(scope="module")
def secured_node(
    ca: tuple[trustme.CA, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaNode]:
    """One Apache Kafka with four secured listeners: SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN), SSL
    requiring a client certificate from the test's CA, SSL with a certificate for another name, and
    SASL_PLAINTEXT."""
    if servers.broker_kind() != "kafka":
        pytest.skip("SASL_SSL needs Apache Kafka (KEEL_TEST_BROKER=kafka); Tansu has no TLS listener")
    from tests.support import apache_kafka

    folder = tmp_path_factory.mktemp("broker-tls")
    certfile, keyfile = _pem_pair(ca[0].issue_cert("127.0.0.1", "localhost"), folder, "broker")
    misnamed_cert, misnamed_key = _pem_pair(ca[0].issue_cert("kafka.example.com"), folder, "misnamed")
    misnamed = folder / "misnamed.bundle.pem"
    misnamed.write_text(misnamed_key.read_text() + misnamed_cert.read_text())
    scram = apache_kafka.Scram(
        servers.free_port(),
        {"keel": PASSWORD, "doomed": DOOMED},
        certfile,
        keyfile,
        mtls_port=servers.free_port(),
        client_ca=ca[1],
        misnamed_port=servers.free_port(),
        misnamed_bundle=misnamed,
        sasl_plaintext_port=servers.free_port(),
    )
    with servers.running(apache_kafka.node(scram=scram)) as node:
        yield node


@pytest.fixture(scope="module")
def broker(secured_node: KafkaNode) -> Scram:
    assert secured_node.scram is not None
    return secured_node.scram


@pytest.fixture(scope="module")
def sasl_port(broker: Scram) -> int:
    return broker.port


def secured(
    port: int, cafile: Path, password: str = PASSWORD, mechanism: str = "SCRAM-SHA-512", **overrides: object
) -> KafkaBus:
    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        username="keel",
        password=password,
        cafile=str(cafile),
    )
    return KafkaBus([f"127.0.0.1:{port}"], timeout_s=10.0, security=security, **overrides)  # type: ignore[arg-type]


async def _round_trip(bus: KafkaBus) -> None:
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    producer = bus.producer()
    await producer.start()
    await producer.send_many([OutgoingMessage(topic, f"r{i}".encode(), key=b"k") for i in range(5)])
    consumer = bus.consumer([topic], f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    got = await read(consumer, 5)
    assert [m.value for m in got] == [f"r{i}".encode() for i in range(5)]
    await bus.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_right_credentials_produce_and_consume_over_sasl_ssl_with_each_mechanism(
    sasl_port: int, ca: tuple[trustme.CA, Path], mechanism: str
) -> None:
    await _round_trip(secured(sasl_port, ca[1], mechanism=mechanism))


async def test_sasl_without_tls_produces_and_consumes(broker: Scram) -> None:
    assert broker.sasl_plaintext_port is not None
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="keel", password=PASSWORD
    )
    await _round_trip(
        KafkaBus([f"127.0.0.1:{broker.sasl_plaintext_port}"], timeout_s=10.0, security=security)
    )


async def test_mutual_tls_takes_the_client_certificate_and_refuses_a_client_without_one(
    broker: Scram, ca: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    assert broker.mtls_port is not None
    certfile, keyfile = _pem_pair(ca[0].issue_cert("keel-client"), tmp_path, "client")
    address = [f"127.0.0.1:{broker.mtls_port}"]
    with_certificate = KafkaSecurity(
        protocol="SSL", cafile=str(ca[1]), certfile=str(certfile), keyfile=str(keyfile)
    )
    await _round_trip(KafkaBus(address, timeout_s=10.0, security=with_certificate))

    anonymous = KafkaBus(address, timeout_s=5.0, security=KafkaSecurity(protocol="SSL", cafile=str(ca[1])))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await anonymous.producer().start()
    assert time.monotonic() - started < 15
    reason = await anonymous.refusal()
    assert reason is not None and "requires a client certificate" in reason and "KAFKA_SSL_CERTFILE" in reason
    await anonymous.close()


async def test_a_broker_certificate_for_another_host_name_is_refused(
    broker: Scram, ca: tuple[trustme.CA, Path]
) -> None:
    """Signed by the trusted CA, but for kafka.example.com: the client must not talk to 127.0.0.1 with it."""
    assert broker.misnamed_port is not None
    bus = KafkaBus(
        [f"127.0.0.1:{broker.misnamed_port}"],
        timeout_s=5.0,
        security=KafkaSecurity(protocol="SSL", cafile=str(ca[1])),
    )
    with pytest.raises(BrokerUnavailable):
        await bus.producer().start()
    reason = await bus.refusal()
    assert reason is not None and "for another name" in reason and "KAFKA_BROKERS" in reason, reason
    await bus.close()


async def test_a_wrong_password_fails_start_within_seconds_without_printing_it(
    sasl_port: int, ca: tuple[trustme.CA, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + uuid.uuid4().hex[:8]
    bus = secured(sasl_port, ca[1], password=wrong)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as failure:
        await bus.producer().start()
    assert time.monotonic() - started < 10
    assert "\n" not in str(failure.value)
    logged = "\n".join(r.getMessage() for r in caplog.records) + str(failure.value)
    assert wrong not in logged and PASSWORD not in logged
    await bus.close()


def secured_environment(sasl_port: int, cafile: Path, dsn: str, password: str) -> dict[str, str]:
    """A `keel serve` process's environment for the SASL_SSL listener, as docs/kafka.md configures it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TEST_", "REDIS_"))}
    return env | {
        "POSTGRES_DSN": dsn,
        "KAFKA_BROKERS": f"127.0.0.1:{sasl_port}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "keel",
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_SSL_CAFILE": str(cafile),
        "SECRET": f"kafka-security-{uuid.uuid4().hex}",  # the default would stop it before the broker
    }


def test_keel_serve_with_a_wrong_password_exits_in_seconds_with_one_line_naming_the_setting(
    sasl_port: int, ca: tuple[trustme.CA, Path], pg_dsn: str, tmp_path: Path
) -> None:
    """The process, not only the client: start-up stops with the broker's refusal in one line (not a
    traceback), a non-zero exit, and neither password anywhere in the output."""
    wrong = "wrong-" + uuid.uuid4().hex[:8]
    env = secured_environment(sasl_port, ca[1], pg_dsn, wrong) | {"KAFKA_TIMEOUT_S": "5"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "serve", "tickets", "--port", str(servers.free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 3, output  # the start failed (docs/observability.md's table)
    assert took < 60, f"{took:.1f} s: the refusal stops the start, no retry loop"
    said = [line for line in output.splitlines() if "refused user 'keel'" in line]
    assert len(said) == 1 and "KAFKA_SASL_PASSWORD" in said[0], output
    assert "Traceback" not in output and wrong not in output and PASSWORD not in output
    print(f"\nwrong password: exit {done.returncode} after {took:.1f} s (imports included): {said[0][:200]}")


async def test_keel_serve_configured_by_the_environment_alone_relays_and_consumes_over_sasl_ssl(
    sasl_port: int, ca: tuple[trustme.CA, Path], fresh_pg_dsn: str, tmp_path: Path
) -> None:
    """The process as deployed on a hosted cluster: `keel serve tickets` with nothing but the KAFKA_*
    variables of docs/kafka.md, a ticket created over HTTP, its event relayed from the outbox and
    consumed into a notification, both over SASL_SSL."""
    port = servers.free_port()
    env = secured_environment(sasl_port, ca[1], fresh_pg_dsn, PASSWORD) | {
        "KAFKA_IDEMPOTENCE": str(servers.idempotent_producers()).lower(),
        "TICKETS_RATE_LIMIT": "",
    }
    user = f"sasl-{uuid.uuid4().hex[:8]}"
    with subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "serve", "tickets", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await eventually(
                    lambda: client.get("/readyz"),
                    until=lambda r: r.status_code == 200,
                    retry_on=(httpx.TransportError,),
                    timeout_s=60,
                    what="keel serve ready",
                )
                created = await client.post(
                    "/v1/tickets",
                    json={"title": "over sasl", "description": "d"},
                    headers={"X-User-Id": user},
                )
                assert created.status_code == 201, created.text
            notified = await eventually(
                lambda: _notifications(fresh_pg_dsn, user),
                until=lambda ids: len(ids) == 1,
                timeout_s=60,
                what="the ticket's notification",
            )
            assert notified == [created.json()["id"]]
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
    assert PASSWORD not in output


async def _notifications(dsn: str, user: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r[0]
            for r in await conn.fetch("SELECT ticket_id::text FROM notifications WHERE user_id = $1", user)
        ]
    finally:
        await conn.close()


async def test_a_plaintext_client_on_the_tls_port_fails_within_seconds_and_is_told_to_use_tls(
    sasl_port: int,
) -> None:
    bus = KafkaBus([f"127.0.0.1:{sasl_port}"], timeout_s=10.0)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await bus.producer().start()
    reason = await bus.refusal()
    assert time.monotonic() - started < 10
    assert reason is not None and "is a TLS listener" in reason and "KAFKA_SECURITY_PROTOCOL" in reason
    await bus.close()


async def test_a_broker_certificate_from_another_ca_is_refused_naming_the_ca_setting(
    sasl_port: int, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    bus = secured(sasl_port, other)
    with pytest.raises(BrokerUnavailable):
        await bus.producer().start()
    reason = await bus.refusal()
    assert reason is not None and "not trusted" in reason and "KAFKA_SSL_CAFILE" in reason
    await bus.close()


async def test_a_broker_that_is_only_away_is_no_refusal() -> None:
    """Down is an outage the outbox rides out, not a reason to stop start-up."""
    bus = KafkaBus([f"127.0.0.1:{servers.free_port()}"], timeout_s=2.0)
    assert await bus.refusal() is None
    await bus.close()


def test_settings_name_what_a_half_set_security_configuration_lacks() -> None:
    with pytest.raises(ValueError, match="KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Settings.model_validate({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "keel"})
    with pytest.raises(ValueError, match="go together"):
        Settings.model_validate({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/c.pem"})
    settings = Settings.model_validate(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "keel",
            "KAFKA_SASL_PASSWORD": PASSWORD,
        }
    )
    assert PASSWORD not in repr(settings) and PASSWORD not in repr(settings.kafka_security())
    assert settings.kafka_security().client_options()["sasl_plain_password"] == PASSWORD


async def test_credentials_revoked_while_running_fail_the_readiness_check_naming_the_refusal(
    secured_node: KafkaNode, ca: tuple[trustme.CA, Path]
) -> None:
    """What a worker's /readyz runs (`KafkaBus.ping`): fine while the user may sign in, failing once
    the broker re-authenticates the session of a user whose credentials were deleted, and soon
    saying so, with the settings to check."""
    from tests.support import apache_kafka

    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username="doomed",
        password=DOOMED,
        cafile=str(ca[1]),
    )
    assert secured_node.scram is not None
    bus = KafkaBus([f"127.0.0.1:{secured_node.scram.port}"], timeout_s=5.0, security=security)
    try:
        await bus.ping()
        apache_kafka.revoke_scram(secured_node.address, "doomed")

        async def ready() -> str | None:
            try:
                await bus.ping()
            except BrokerUnavailable as exc:
                return str(exc)
            return None

        failed = await eventually(
            ready,
            # The check fails at once; a probe in the background then names why, for the next one.
            until=lambda why: why is not None and "refused user 'doomed'" in why,
            timeout_s=4 * apache_kafka.REAUTH_MS / 1000 + 10,
            interval_s=0.5,
            what="the readiness check failing after the revocation",
        )
        assert "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD" in failed and DOOMED not in failed
    finally:
        await bus.close()
