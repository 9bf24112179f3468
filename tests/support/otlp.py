"""An OTLP/HTTP trace receiver on loopback, in process: what a collector would get from Keel's
exporter (OTLP's JSON encoding, keel.core.otlp_json), decoded into plain records that tests query by
trace."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id)


_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _json_value(v: dict[str, Any]) -> Any:
    ((kind, value),) = v.items()
    if kind == "intValue":
        return int(value)
    if kind == "arrayValue":
        return [_json_value(x) for x in value.get("values", [])]
    return value


def _json_attributes(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: _json_value(a["value"]) for a in attributes}


def _from_json(request: dict[str, Any]) -> list[ReceivedSpan]:
    """An ExportTraceServiceRequest in OTLP's JSON encoding (what Keel's exporter sends)."""
    got = []
    for resource_spans in request["resourceSpans"]:
        resource = _json_attributes(resource_spans["resource"]["attributes"])
        for scope_spans in resource_spans["scopeSpans"]:
            for s in scope_spans["spans"]:
                got.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name")),
                        name=s["name"],
                        kind=_KINDS[s["kind"]],
                        trace_id=s["traceId"],
                        span_id=s["spanId"],
                        parent_id=s.get("parentSpanId") or None,
                        attributes=_json_attributes(s.get("attributes", [])),
                        links=tuple((link["traceId"], link["spanId"]) for link in s.get("links", [])),
                    )
                )
    return got


class OtlpReceiver:
    """`keep=False` only counts what arrives (`received`): a long run's spans are not held."""

    def __init__(self, *, keep: bool = True) -> None:
        self.spans: list[ReceivedSpan] = []
        self.received = 0
        self._keep = keep
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept alive, as a collector keeps them

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._add(orjson.loads(body))
                reply = b"{}"  # an ExportTraceServiceResponse: nothing rejected
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, request: dict[str, Any]) -> None:
        if not self._keep:  # count only: a long run's receiver does no more work than that
            count = sum(len(ss["spans"]) for rs in request["resourceSpans"] for ss in rs["scopeSpans"])
            with self._lock:
                self.received += count
            return
        got = _from_json(request)
        with self._lock:
            self.received += len(got)
            self.spans.extend(got)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.name == name]


def traced(settings: Any, receiver: OtlpReceiver) -> Any:
    """These settings exporting to `receiver`, keeping every trace (the sampler variable's path)."""
    return settings.model_copy(
        update={
            "otel_exporter_otlp_endpoint": receiver.endpoint,
            "otel_traces_sampler": "parentbased_always_on",
        }
    )


def traceparent(trace_id: str) -> str:
    """A caller's sampled context in `trace_id` (its span is not exported: the trace's root is outside)."""
    return f"00-{trace_id}-{'ab' * 8}-01"


def assert_parent(spans: list[ReceivedSpan], child: str, parent: str) -> None:
    """Some span named `child` is a child of some span named `parent`, in the same trace."""
    parents = {s.span_id for s in spans if s.name == parent}
    children = [s for s in spans if s.name == child]
    assert children, f"no {child!r} span in {sorted({s.name for s in spans})}"
    assert any(c.parent_id in parents for c in children), f"{child!r} is not a child of {parent!r}"


def assert_connected(spans: list[ReceivedSpan], root_parent: str) -> None:
    """Every span's parent is in the trace, or is the caller's span that started it."""
    ids = {s.span_id for s in spans} | {root_parent}
    orphans = [s.name for s in spans if s.parent_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
