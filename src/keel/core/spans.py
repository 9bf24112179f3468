"""The messaging spans Keel makes itself, named and attributed after the OpenTelemetry messaging
conventions: a `send {topic}` producer span per published record (its context replaces the record's
`traceparent`), and `process {topic}` consumer spans — one per record handled alone, one per batch
(linked to every record) when a batch is handled in one go. The server span of each request is in
keel.core.server_spans."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
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
