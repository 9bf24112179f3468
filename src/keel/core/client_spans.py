"""The database and Redis client spans (the asyncpg and Redis instrumentations' tracer): a span only
under a sampled span, recorded without the SDK's span machinery.

Under an unsampled span (most requests) the SDK would start and drop a span per statement or command;
here the call runs under its parent's context as it is. Under a sampled one the SDK's `Tracer`
costs more per kept span than the statement's own client work (its attribute checks, locks and
processor hooks; bench/results/changes.md), several per request on the create path: `ClientSpan`
holds the same fields in plain attributes and hands the batch processor
the SDK's `ReadableSpan` when it ends, so the collector sees what the SDK would have sent."""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

_UNSET = Status(StatusCode.UNSET)


class UnderSampled(trace.TracerProvider):
    """The client instrumentations' provider: their spans go to `processor`, only under a sampled span."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        self._processor = processor
        self._resource = resource

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        scope = InstrumentationScope(instrumenting_module_name, instrumenting_library_version, schema_url)
        return _UnderSampledTracer(self._processor, self._resource, scope)


class _UnderSampledTracer(trace.Tracer):
    def __init__(self, processor: SpanProcessor, resource: Resource, scope: InstrumentationScope) -> None:
        self._processor = processor
        self._resource = resource
        self._scope = scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if not parent.trace_flags.sampled:
            return trace.NonRecordingSpan(parent)
        return ClientSpan(name, parent, kind, attributes, start_time, self)

    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Context | None = None, **options: Any
    ) -> Iterator[trace.Span]:
        """`start_span`'s arguments by keyword (as the instrumentations pass them), and `use_span`'s."""
        use = {k: options.pop(k) for k in ("record_exception", "set_status_on_exception") if k in options}
        end_on_exit = options.pop("end_on_exit", True)
        span = self.start_span(name, context, **options)
        if not span.is_recording():
            # The parent's context is current already: nothing to attach, nothing to end.
            return nullcontext(span)  # type: ignore[return-value]
        return trace.use_span(span, end_on_exit=end_on_exit, **use)  # type: ignore[return-value]

    def end(self, span: ClientSpan) -> None:
        self._processor.on_end(
            ReadableSpan(
                span.name,
                span.context,
                span.parent,
                self._resource,
                span.attributes,
                span.events,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=self._scope,
            )
        )


class ClientSpan(trace.Span):
    """A client span under a sampled span: a child of it in its trace, recorded when it ends."""

    def __init__(
        self,
        name: str,
        parent: SpanContext,
        kind: SpanKind,
        attributes: Attributes,
        start_time: int | None,
        tracer: _UnderSampledTracer,
    ) -> None:
        self.name = name
        self.parent = parent
        self.kind = kind
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self.events: list[Event] = []
        self.status = _UNSET
        self.start_time = start_time or time.time_ns()
        self.end_time: int | None = None
        self.context = SpanContext(
            parent.trace_id, random.getrandbits(64) or 1, False, parent.trace_flags, parent.trace_state
        )
        self._tracer = tracer

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_time is None:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self.end_time is None:
            self.events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        return None  # the instrumentations link nothing

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        recorded = {
            "exception.type": type(exception).__name__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        self._tracer.end(self)
