"""Spans to an OTLP/HTTP receiver in the protocol's JSON encoding (`application/json`, OTLP 1.x: ids
in hex, 64-bit integers as strings), which every OTLP/HTTP receiver accepts beside protobuf.

Why not the SDK's OTLP/HTTP exporter: its protobuf encoder builds a message object per span,
attribute and value in Python, several times the cost of the span itself; the batch processor runs it
on a thread of the serving process, under the same GIL as the requests. Built as plain dicts and
serialised by orjson, a batch costs a fraction of that (docs/design-decisions.md, with the figure).
Like the SDK's exporter: OTEL_EXPORTER_OTLP_HEADERS (and _TRACES_HEADERS), gzip with
OTEL_EXPORTER_OTLP_COMPRESSION=gzip, an https endpoint verified against OTEL_EXPORTER_OTLP_CERTIFICATE
(and _TRACES_CERTIFICATE; else the system's CAs), and a batch refused with 429/502/503/504 or not
delivered is retried with backoff until the export timeout.

Sent with the standard library's `http.client` over one kept-alive connection: the thread that sends
shares the GIL with the requests, and each time it takes the GIL back after a system call the event
loop may wait for it. An httpx POST of a batch cost more CPU than `http.client`'s
(docs/design-decisions.md, with the figure)."""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import random
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext
from opentelemetry.util.re import parse_env_headers

from keel.core.errors import StartupError
from keel.core.hexids import hex64, hex128
from keel.core.metrics import TRACE_SPANS_DROPPED

log = logging.getLogger("keel.telemetry")

RETRYABLE = frozenset({429, 502, 503, 504})
# A batch is encoded on the processor's thread, holding the GIL: an event loop that wants it back
# waits up to the interpreter's switch interval (`sys.getswitchinterval()`) each time. Letting it go
# every few spans bounds that wait to their encoding (the served p99 with tracing on:
# bench/results/changes.md).
PAUSE_EVERY = 32
TIMEOUT_S = 10.0
# OTLP SpanFlags: the parent's remoteness is known (bit 8) and the parent is remote (bit 9).
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):  # before int: a bool is an int
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"stringValue": value.decode("utf-8", "replace")}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()] if attributes else []


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    assert context is not None
    out: dict[str, Any] = {
        "traceId": hex128(context.trace_id),
        "spanId": hex64(context.span_id),
        "name": span.name,
        "kind": span.kind.value + 1,  # the API's enum starts at INTERNAL = 0; OTLP's at UNSPECIFIED
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _attributes(span.attributes),
        "flags": _flags(span.parent),
    }
    if span.parent is not None:
        out["parentSpanId"] = hex64(span.parent.span_id)
    if context.trace_state:
        out["traceState"] = context.trace_state.to_header()
    status = span.status
    if status.status_code.value:
        out["status"] = {"code": status.status_code.value, "message": status.description or ""}
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)}
            for e in span.events
        ]
    if span.links:
        out["links"] = [
            {
                "traceId": hex128(link.context.trace_id),
                "spanId": hex64(link.context.span_id),
                "attributes": _attributes(link.attributes),
                "flags": _flags(link.context),
            }
            for link in span.links
        ]
    for name, field in (
        ("droppedAttributesCount", span.dropped_attributes),
        ("droppedEventsCount", span.dropped_events),
        ("droppedLinksCount", span.dropped_links),
    ):
        if field:
            out[name] = field
    return out


def encode(spans: Sequence[ReadableSpan], *, pause_every: int = 0) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by instrumentation scope.
    `pause_every` N spans, the GIL is let go (see JsonSpanExporter.export)."""
    # Resources compared by identity: a process has one (hashing one serialises its attributes).
    grouped: dict[int, tuple[Any, dict[Any, list[dict[str, Any]]]]] = {}
    for i, span in enumerate(spans, 1):
        _, by_scope = grouped.setdefault(id(span.resource), (span.resource, defaultdict(list)))
        by_scope[span.instrumentation_scope].append(_span(span))
        if pause_every and i % pause_every == 0:
            time.sleep(0)
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes)},
                "scopeSpans": [
                    {
                        "scope": {"name": scope.name, "version": scope.version or ""} if scope else {},
                        "spans": encoded,
                    }
                    for scope, encoded in by_scope.items()
                ],
            }
            for resource, by_scope in grouped.values()
        ]
    }
    return orjson.dumps(request)


def env_headers() -> dict[str, str]:
    """The standard variables, the traces-only one winning (what the SDK's exporter reads)."""
    return {
        **parse_env_headers(os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True),
        **parse_env_headers(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""), liberal=True),
    }


def env_certificate() -> str | None:
    """The CA file an https receiver's certificate is verified against, the traces-only one winning."""
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        or os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
        or None
    )


def _verifying(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"OTEL_EXPORTER_OTLP_CERTIFICATE={cafile} cannot be read as CA certificates "
            f"({getattr(exc, 'strerror', None) or exc}): set it to the PEM file of the collector's CA"
        ) from exc


class _Receiver:
    """One kept-alive HTTP/1.1 connection to the receiver, opened when first needed and again after
    a failure. Not thread-safe: the batch processor's one thread sends."""

    def __init__(self, endpoint: str, cafile: str | None) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL, not {endpoint!r}")
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._host, self._port, self._tls = url.hostname, url.port, url.scheme == "https"
        self._context = _verifying(cafile) if self._tls else None
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        """The receiver's status for `body`. A kept-alive connection the receiver closed while idle is
        reopened and the request sent again at once; other failures raise OSError or HTTPException."""
        reused = self._connection is not None
        try:
            return self._post_once(body, headers, timeout_s)
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
            self.close()
            if not reused:
                raise
        return self._post_once(body, headers, timeout_s)

    def _post_once(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        connection = self._connection
        if connection is None:
            if self._context is not None:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout_s, context=self._context
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
            self._connection = connection
        elif connection.sock is not None:
            connection.sock.settimeout(timeout_s)
        try:
            connection.request("POST", self.path, body=body, headers=dict(headers))
            response = connection.getresponse()
            response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class JsonSpanExporter(SpanExporter):
    """POSTs each batch to `endpoint` (…/v1/traces); called by the batch processor's one thread."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        timeout_s: float = TIMEOUT_S,
        cafile: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        compression = compression or os.environ.get("OTEL_EXPORTER_OTLP_COMPRESSION", "")
        self.gzip = compression.strip().lower() == "gzip"
        sent = {"content-type": "application/json", **(env_headers() if headers is None else headers)}
        if self.gzip:
            sent["content-encoding"] = "gzip"
        self._headers = sent
        self._receiver = _Receiver(endpoint, cafile or env_certificate())
        self._stopped = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped.is_set():
            return SpanExportResult.FAILURE
        body = encode(spans, pause_every=PAUSE_EVERY)
        if self.gzip:
            body = gzip.compress(body, compresslevel=6)
        deadline = time.monotonic() + self.timeout_s
        delay = 1.0
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                status = self._receiver.post(body, self._headers, left)
            except (OSError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if status < 300:
                    return SpanExportResult.SUCCESS
                reason = f"HTTP {status}"
                if status not in RETRYABLE:
                    log.warning("trace export refused: %s, %d spans dropped", reason, len(spans))
                    TRACE_SPANS_DROPPED.labels("refused").inc(len(spans))
                    return SpanExportResult.FAILURE
            wait = delay * random.uniform(0.8, 1.2)
            if time.monotonic() + wait > deadline or self._stopped.wait(wait):
                log.warning("trace export failed: %s, %d spans dropped", reason, len(spans))
                TRACE_SPANS_DROPPED.labels("failed").inc(len(spans))
                return SpanExportResult.FAILURE
            delay *= 2

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._stopped.set()
        self._receiver.close()
