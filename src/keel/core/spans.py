"""The spans Keel makes itself, named and attributed after the OpenTelemetry HTTP and messaging
conventions: one server span per request, a `send {topic}` producer span per published record (its
context replaces the record's `traceparent`), and `process {topic}` consumer spans — one per record
handled alone, one per batch (linked to every record) when a batch is handled in one go."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, Sampler, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from keel.core import telemetry
from keel.core.bus.message import Message, OutgoingMessage

SYSTEM = "kafka"
_NO_SPAN: nullcontext[None] = nullcontext()
_ENVELOPE_ID = b'{"event_id":"'  # how `encode` and the relay start an envelope (id first, a UUID)


def _message_id(message: Message | OutgoingMessage) -> str | None:
    for name, value in message.headers:
        if name == "event-id":
            return value.decode("latin-1")
    raw = message.value
    if raw is not None and raw.startswith(_ENVELOPE_ID):
        return raw[13:49].decode("latin-1")
    return None


def _messaging(operation: str, topic: str, **more: Any) -> dict[str, Any]:
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    attributes.update((k.replace("__", "."), v) for k, v in more.items() if v is not None)
    return attributes


# --- consuming ---


def process_one(message: Message, group: str) -> Any:
    """The span of one record handled alone, a child of its producer's span."""
    tracing = telemetry.active()
    if tracing is None:
        return _NO_SPAN
    return tracing.tracer.start_as_current_span(
        f"process {message.topic}",
        context=telemetry.extract(message.headers),
        kind=SpanKind.CONSUMER,
        attributes=_messaging(
            "process",
            message.topic,
            messaging__destination__partition__id=str(message.partition),
            messaging__kafka__offset=message.offset,
            messaging__consumer__group__name=group,
            messaging__message__id=_message_id(message),
        ),
    )


def process_batch(topic: str, partition: int, messages: Sequence[Message], group: str) -> Any:
    """One span for a batch handled in one go, linked to each record's producer span. When every
    record comes from one trace (one request fanned out, one producer run) the span continues it, so
    that trace reads from end to end; a batch of many traces starts its own, reached by the links."""
    tracing = telemetry.active()
    if tracing is None:
        return _NO_SPAN
    links: list[Link] = []
    traces: set[int] = set()
    parent = None
    for message in messages:
        context = telemetry.extract(message.headers)
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context, {"messaging.kafka.offset": message.offset}))
            traces.add(span_context.trace_id)
            parent = parent or context
    return tracing.tracer.start_as_current_span(
        f"process {topic}",
        # An empty Context, not the ambient one: a batch of many traces is a root.
        context=parent if len(traces) == 1 else otel_context.Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=_messaging(
            "process",
            topic,
            messaging__destination__partition__id=str(partition),
            messaging__kafka__offset=messages[0].offset if messages else None,
            messaging__consumer__group__name=group,
            messaging__batch__message_count=len(messages),
        ),
    )


# --- publishing ---


@dataclasses.dataclass(slots=True)
class Sending:
    """The producer spans of records in flight; each ends with the broker's answer."""

    spans: list[Span]
    messages: list[OutgoingMessage]

    def acked(self, positions: Sequence[tuple[int, int] | None]) -> None:
        for span, position in zip(self.spans, positions, strict=False):
            if position is not None:
                span.set_attribute("messaging.destination.partition.id", str(position[0]))
                span.set_attribute("messaging.kafka.offset", position[1])
            span.end()

    def failed(self, error: BaseException) -> None:
        for span in self.spans:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()


def start_sending(messages: Sequence[OutgoingMessage]) -> Sending | None:
    """A `send {topic}` span per record, a child of the context the record carries (else of the
    current span), whose own context the record carries on instead. None when tracing is off."""
    tracing = telemetry.active()
    if tracing is None:
        return None
    ambient = otel_context.get_current()
    spans: list[Span] = []
    out: list[OutgoingMessage] = []
    for message in messages:
        carried = telemetry.carrier(message.headers)
        parent = telemetry.extract(message.headers) if carried else ambient
        span = tracing.tracer.start_span(
            f"send {message.topic}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=_messaging("send", message.topic, messaging__message__id=_message_id(message)),
        )
        kept = tuple((k, v) for k, v in message.headers if k not in telemetry.TRACE_HEADERS)
        headers = kept + telemetry.inject(trace.set_span_in_context(span))
        spans.append(span)
        out.append(dataclasses.replace(message, headers=headers))
    return Sending(spans, out)


# --- serving ---


_LOW_64 = TraceIdRatioBased.TRACE_ID_LIMIT
_RANDOM = TraceFlags.RANDOM_TRACE_ID  # W3C level 2: the trace id's low bits are random (ours are)
_FLAGS = {
    (sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else 0) | (_RANDOM if random else 0))
    for sampled in (False, True)
    for random in (False, True)
}
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)


class server_span:
    """The one server span of a request, a child of the caller's `traceparent`; the edge names it
    after the route and sets the status once known (`finish`).

    The SDK's `Tracer.start_span` is not used here: it costs more than a cached GET's own work (bench
    /results/changes.md). The sampler's decision is made the SDK's way — its ratio rule on a fresh
    root, else the sampler itself — and the request runs under a span that records nothing and carries
    that decision (what the logs, the client spans and the events' `traceparent` read; its
    `SpanContext` is built when first read, which a cached GET never does). A sampled span is
    recorded as the SDK's `ReadableSpan` at the end and handed to the same batch processor as every
    other span, so the collector sees what the SDK would have sent. A class rather than a generator-based
    context manager: this runs on every request."""

    __slots__ = (
        "_attributes",
        "_context",
        "_flags",
        "_name",
        "_parent",
        "_scope",
        "_span_id",
        "_start",
        "_state",
        "_status",
        "_token",
        "_trace_id",
    )

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self._scope = scope
        self._start = 0  # the start time of a recorded span; 0: not sampled
        self._context: SpanContext | None = None

    def __enter__(self) -> server_span:
        tracing = telemetry.active()
        assert tracing is not None
        scope = self._scope
        carried: dict[str, str] | None = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent" or name == b"tracestate":
                carried = carried or {}
                carried[name.decode("latin-1")] = value.decode("latin-1")
        method = scope["method"]
        parent: SpanContext | None = None
        if carried is not None:
            parent_context = propagate.extract(carried)
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                parent = None
        ids = tracing.provider.id_generator
        trace_id = parent.trace_id if parent is not None else ids.generate_trace_id()
        state = None
        if parent is None and tracing.root_bound is not None:
            sampled = trace_id & _LOW_64 < tracing.root_bound
        else:
            decision = tracing.sampler.should_sample(
                parent_context if parent is not None else None, trace_id, method, SpanKind.SERVER
            )
            sampled, state = decision.decision is Decision.RECORD_AND_SAMPLE, decision.trace_state
        random = parent.trace_flags.random_trace_id if parent is not None else True
        self._trace_id, self._span_id = trace_id, ids.generate_span_id()
        self._flags, self._state = _FLAGS[sampled, random], state
        if sampled:
            self._start = time.time_ns()
            self._parent = parent
            self._name = method
            self._status = _UNSET
            self._attributes = {
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            }
        self._token = otel_context.attach(trace.set_span_in_context(_InContext(self)))
        return self

    def is_recording(self) -> bool:
        return self._start != 0

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                self._trace_id, self._span_id, False, self._flags, self._state
            )
        return context

    def log_ids(self) -> tuple[str, str]:
        """`trace_id` and `span_id` as the log lines write them (the access log's, read here rather
        than through the context: it writes one line per request)."""
        return format(self._trace_id, "032x"), format(self._span_id, "016x")

    def finish(self, method: str, route: str, status: int) -> None:
        """Name the span after its route and set the status (the edge knows them at the end)."""
        if self._start:
            self._name = f"{method} {route}"
            self._attributes["http.route"] = route
            self._attributes["http.response.status_code"] = status
            if status >= 500:
                self._status = _ERROR

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)
        if self._start:
            tracing = telemetry.active()
            if tracing is None:  # tracing was shut down while the request ran
                return
            tracing.processor.on_end(
                ReadableSpan(
                    self._name,
                    self.get_span_context(),
                    self._parent,
                    tracing.resource,
                    self._attributes,
                    kind=SpanKind.SERVER,
                    status=self._status,
                    start_time=self._start,
                    end_time=time.time_ns(),
                    instrumentation_scope=tracing.scope,
                )
            )


class _InContext(NonRecordingSpan):
    """The request's span as the context holds it: records nothing, like any unsampled span, and asks
    the server span for its `SpanContext` only when something reads it."""

    def __init__(self, span: server_span) -> None:
        self._span = span

    def get_span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self._span.get_span_context()!r})"


# --- command-line tools ---


@contextmanager
def command_trace(service: str, name: str, endpoint: str | None, sampler: Sampler) -> Iterator[None]:
    """A tool's run (`keel orders produce`, `keel demo`) as one trace: a root span `name` over every
    record it publishes, exported before the tool exits. Nothing without an endpoint."""
    if not telemetry.setup_tracing(service, endpoint, sampler=sampler):
        yield
        return
    tracing = telemetry.active()
    assert tracing is not None
    try:
        with tracing.tracer.start_as_current_span(name):
            yield
    finally:
        telemetry.shutdown_tracing()
