"""Why a broker refuses this client, when the cause is a setting that no retry will fix.

aiokafka reports every failed bootstrap as "Unable to bootstrap from [...]": a broker that is down
and a broker that rejected our password look the same. At start-up they must not: a broker that is
away is an outage the outbox rides out, while wrong credentials or a TLS mismatch are a deployment
error the operator must see at once, in one line that names the setting to fix. So after a failed
start the bus opens one connection itself, the way aiokafka does, and reads the real error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from aiokafka import errors
from aiokafka.conn import create_conn

from keel.core.bus.security import KafkaSecurity

_CREDENTIALS = (
    errors.SaslAuthenticationFailed,
    errors.IllegalSaslStateError,
    errors.UnsupportedSaslMechanismError,
    errors.AuthenticationFailedError,
    errors.AuthenticationMethodNotSupported,
)


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: trusted, but not for
# the address the client was given.
_NAME_MISMATCH = frozenset({62, 64})
# How long a listener may take to send its alert to a client that offered no certificate.
_ALERT_WAIT_S = 2.0
_NO_CERTIFICATE_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "HANDSHAKE_FAILURE")


async def refusal(address: str, security: KafkaSecurity, timeout_s: float) -> str | None:
    """One line naming what is wrong and which setting fixes it; None when the broker accepts this
    client or is merely unreachable (down, or not answering in `timeout_s`)."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host, int(port), request_timeout_ms=int(timeout_s * 1000), **security.client_options()
            )
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in _NAME_MISMATCH:
            return (
                f"kafka {address}: its TLS certificate is for another name ({exc.verify_message}); "
                "list the brokers in KAFKA_BROKERS by a name their certificates carry"
            )
        return (
            f"kafka {address}: its TLS certificate is not trusted ({exc.verify_message}); "
            "set KAFKA_SSL_CAFILE to the CA that signed it"
        )
    except ssl.SSLError as exc:
        return (
            f"kafka {address}: TLS handshake failed ({exc.reason or exc}); "
            "check KAFKA_SECURITY_PROTOCOL: does this listener speak TLS?"
        )
    except _CREDENTIALS as exc:
        return (
            f"kafka {address} refused user {security.username!r} ({security.sasl_mechanism}): "
            f"{_reason(exc)}; check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    except ValueError as exc:  # (after the TLS errors, which are ValueErrors too) aiokafka's SCRAM exchange: the server's proof did not match
        return f"kafka {address} failed the {security.sasl_mechanism} exchange ({exc}); check KAFKA_SASL_*"
    except (OSError, TimeoutError, errors.KafkaError):
        if (
            security.tls
            and not security.certfile
            and await _wants_a_client_certificate(host, int(port), security)
        ):
            return (
                f"kafka {address} requires a client certificate (mutual TLS): "
                "set KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE"
            )
        if not security.tls and await _speaks_tls(host, int(port), timeout_s):
            return (
                f"kafka {address} is a TLS listener but KAFKA_SECURITY_PROTOCOL={security.protocol}: "
                "set it to SSL or SASL_SSL (and KAFKA_SSL_CAFILE to its CA)"
            )
        return None
    conn.close()
    return None


def _reason(exc: Exception) -> str:
    # aiokafka's errors print as "[Error 58] SaslAuthenticationFailedError: <broker's message>".
    return str(exc).strip() or type(exc).__name__


async def _speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether the port completes a TLS handshake (the certificate unchecked: only the protocol is asked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _wants_a_client_certificate(host: str, port: int, security: KafkaSecurity) -> bool:
    """Whether the listener ends a handshake that offered no certificate with an alert: "certificate
    required" (TLS 1.3's own), "bad certificate" (what Java's TLS sends) or a handshake failure. It
    arrives after the client's side of the handshake is done, which is why the connection itself
    seemed to succeed."""
    try:
        async with asyncio.timeout(_ALERT_WAIT_S):
            reader, writer = await asyncio.open_connection(host, port, ssl=security.ssl_context())
            try:
                await reader.read(1)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except ssl.SSLError as exc:
        return any(alert in str(exc.reason) for alert in _NO_CERTIFICATE_ALERTS)
    except (OSError, TimeoutError):
        return False
    return False
