"""Keel's OTLP/JSON span exporter against a receiver on loopback: every field a span carries arrives
(checked against the protocol's own message schema too), a receiver that is briefly unavailable gets
the batch on a retry, a refusal is not retried, the standard header, compression and certificate
variables apply, and batches go over one kept-alive connection that is reopened at once when the
receiver closed it."""

from __future__ import annotations

import contextlib
import gzip
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from keel.core.errors import StartupError
from keel.core.metrics import REGISTRY
from keel.core.otlp_json import JsonSpanExporter, encode
from tests.support.otlp import OtlpReceiver

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


@dataclass
class Scripted:
    """A receiver answering each POST with the next status of `statuses` (then 200)."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    endpoint: str = ""
    connections: int = 0  # the TCP connections the exporter opened
    # Answer the next request, then close its connection (as a receiver's idle timeout does).
    close_after_next: bool = False


@contextlib.contextmanager
def receiving(tls: ssl.SSLContext | None = None) -> Iterator[Scripted]:
    """A scripted receiver speaking HTTP/1.1 (connections kept alive), over TLS with `tls`."""
    state = Scripted([])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            state.connections += 1
            super().setup()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            if state.close_after_next:
                state.close_after_next = False
                self.close_connection = True  # closed without saying so: no `connection: close`

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    state.endpoint = f"{scheme}://localhost:{server.server_address[1]}/v1/traces"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    with receiving() as state:
        yield state


def finished_spans() -> list[ReadableSpan]:
    """Spans of every shape Keel makes: a server span under a remote parent with trace state, a
    producer span with an error status and an exception event, a batch span with links."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("keel")
    remote = SpanContext(TRACE_ID, 0xAB, True, TraceFlags(1), TraceState([("vendor", "v1")]))
    with (
        tracer.start_as_current_span(
            "GET /items/{id}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
            kind=SpanKind.SERVER,
            attributes={"http.response.status_code": 200, "url.path": "/items/7", "retry": False},
        ),
        tracer.start_as_current_span("send t", kind=SpanKind.PRODUCER) as send,
    ):
        send.set_attribute("ratio", 0.5)
        send.set_attribute("partitions", [1, 2])
        send.record_exception(ValueError("broker down"))
        send.set_status(Status(StatusCode.ERROR, "broker down"))
    with tracer.start_as_current_span(
        "process t", kind=SpanKind.CONSUMER, links=[Link(remote, {"messaging.kafka.offset": 41})]
    ):
        pass
    return list(memory.get_finished_spans())


def test_every_field_arrives_and_the_request_fits_the_protocol_schema():
    spans = finished_spans()
    body = encode(spans)
    # The protocol's own messages accept it: field names and value types are OTLP's.
    json_format.Parse(body, ExportTraceServiceRequest())
    with OtlpReceiver() as receiver:
        assert JsonSpanExporter(f"{receiver.endpoint}/v1/traces").export(spans) is SpanExportResult.SUCCESS
        got = {s.name: s for s in receiver.spans}
    server, send, batch = got["GET /items/{id}"], got["send t"], got["process t"]
    assert (server.kind, send.kind, batch.kind) == ("SERVER", "PRODUCER", "CONSUMER")
    assert server.service == "svc" and server.trace_id == format(TRACE_ID, "032x")
    assert server.parent_id == format(0xAB, "016x") and send.parent_id == server.span_id
    assert server.attributes == {"http.response.status_code": 200, "url.path": "/items/7", "retry": False}
    assert send.attributes == {"ratio": 0.5, "partitions": [1, 2]}
    assert batch.links == ((format(TRACE_ID, "032x"), format(0xAB, "016x")),)
    (encoded_send,) = [
        s for s in orjson.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["name"] == "send t"
    ]
    assert encoded_send["status"] == {"code": 2, "message": "broker down"}
    assert encoded_send["events"][0]["name"] == "exception"
    (encoded_server,) = [
        s
        for s in orjson.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"]
        if s["kind"] == SpanKind.SERVER.value + 1
    ]
    assert encoded_server["traceState"] == "vendor=v1"
    assert encoded_server["flags"] == 0x300  # the parent is known to be remote


def test_a_receiver_briefly_unavailable_gets_the_batch_on_a_retry(scripted: Scripted):
    scripted.statuses = [503]
    exporter = JsonSpanExporter(scripted.endpoint, timeout_s=5)
    assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    assert len(scripted.requests) == 2 and scripted.requests[0][1] == scripted.requests[1][1]


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("trace_spans_dropped_total", {"reason": reason}) or 0.0


def test_a_refused_batch_is_dropped_at_once_said_and_counted(scripted: Scripted, caplog):
    scripted.statuses = [400]
    exporter = JsonSpanExporter(scripted.endpoint, timeout_s=5)
    before = _dropped("refused")
    assert exporter.export(finished_spans()) is SpanExportResult.FAILURE
    assert len(scripted.requests) == 1
    assert "HTTP 400, 3 spans dropped" in caplog.text
    assert _dropped("refused") == before + 3


def test_an_unreachable_receiver_fails_the_export_within_its_timeout_and_counts_the_spans(caplog):
    exporter = JsonSpanExporter("http://127.0.0.1:9/v1/traces", timeout_s=1.5)
    before = _dropped("failed")
    assert exporter.export(finished_spans()) is SpanExportResult.FAILURE
    assert "trace export failed" in caplog.text
    assert _dropped("failed") == before + 3


def test_the_standard_header_and_compression_variables_apply(scripted: Scripted, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken,x-tenant=a")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=traces")  # the traces-only one wins
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    spans = finished_spans()
    assert JsonSpanExporter(scripted.endpoint).export(spans) is SpanExportResult.SUCCESS
    ((headers, body),) = scripted.requests
    assert headers["authorization"] == "Bearer t0ken" and headers["x-tenant"] == "traces"
    assert headers["content-type"] == "application/json" and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == encode(spans)


def test_batches_share_one_connection_and_one_the_receiver_closed_is_reopened_at_once(scripted: Scripted):
    exporter = JsonSpanExporter(scripted.endpoint, timeout_s=5)
    for _ in range(3):
        assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    assert (len(scripted.requests), scripted.connections) == (3, 1)

    scripted.close_after_next = True
    assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    began = time.monotonic()
    assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS  # on a connection it closed
    assert time.monotonic() - began < 0.5  # sent again at once, not after the retry's backoff
    assert (len(scripted.requests), scripted.connections) == (5, 2)
    exporter.shutdown()


@pytest.fixture(scope="module")
def collector_ca() -> trustme.CA:
    return trustme.CA()


def _tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


def test_an_https_receiver_is_verified_against_the_certificate_variable(
    collector_ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ca_file = tmp_path / "collector-ca.pem"
    collector_ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(ca_file))
    with receiving(_tls(collector_ca)) as receiver:
        spans = finished_spans()
        assert JsonSpanExporter(receiver.endpoint, timeout_s=5).export(spans) is SpanExportResult.SUCCESS
    # The traces-only variable wins: the general one may name another file, even one that is not there.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(tmp_path / "no-such-ca.pem"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", str(ca_file))
    with receiving(_tls(collector_ca)) as receiver:
        spans = finished_spans()
        assert JsonSpanExporter(receiver.endpoint, timeout_s=5).export(spans) is SpanExportResult.SUCCESS
        ((_, body),) = receiver.requests
        assert body == encode(spans)


def test_an_https_receiver_with_an_untrusted_certificate_gets_nothing(
    collector_ca: trustme.CA, caplog: pytest.LogCaptureFixture
):
    with receiving(_tls(collector_ca)) as receiver:  # its CA is not among the system's
        exporter = JsonSpanExporter(receiver.endpoint, timeout_s=1.5)
        assert exporter.export(finished_spans()) is SpanExportResult.FAILURE
        assert receiver.requests == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_an_unreadable_certificate_file_stops_the_start_in_one_line(tmp_path: Path):
    with pytest.raises(StartupError) as failure:
        JsonSpanExporter("https://collector:4318/v1/traces", cafile=str(tmp_path / "missing.pem"))
    message = str(failure.value)
    assert message.startswith("OTEL_EXPORTER_OTLP_CERTIFICATE=") and "\n" not in message
    assert "No such file" in message
