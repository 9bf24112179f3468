"""The one server span of each request, after the OpenTelemetry HTTP conventions (the messaging spans
are in keel.core.spans)."""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from contextvars import Token
from random import getrandbits
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from keel.core import telemetry
from keel.core.hexids import hex64, hex128

_LOW_64 = TraceIdRatioBased.TRACE_ID_LIMIT
_RANDOM = TraceFlags.RANDOM_TRACE_ID  # W3C level 2: the trace id's low bits are random (ours are)
_FLAGS = {
    (sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else 0) | (_RANDOM if random else 0))
    for sampled in (False, True)
    for random in (False, True)
}
_ERROR = Status(StatusCode.ERROR)
_ROOT_FLAGS = (_FLAGS[False, True], _FLAGS[True, True])
_UNSET = Status(StatusCode.UNSET)

log = logging.getLogger("keel.telemetry")


class _Attach:
    """`otel_context`'s attach and detach as a ContextVar's get, set and reset: for a runtime context
    other than the default one (OTEL_PYTHON_CONTEXT)."""

    get = staticmethod(otel_context.get_current)
    set = staticmethod(otel_context.attach)

    @staticmethod
    def reset(token: Token[Context]) -> None:
        otel_context.detach(token)


# The variable behind OpenTelemetry's current context: the server span sets it straight, as
# `otel_context.attach` does through three calls. The key a context holds its span under, as
# `trace.set_span_in_context` writes it.
_RUNTIME = otel_context._RUNTIME_CONTEXT
_CURRENT = _RUNTIME._current_context if isinstance(_RUNTIME, ContextVarsRuntimeContext) else _Attach
_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))


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
        ids = tracing.provider.id_generator
        parent: SpanContext | None = None
        if carried is not None:
            parent_context = propagate.extract(carried)
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                parent = None
        state = None
        if parent is None:
            # Both ids of a fresh root in one draw from the source of the provider's generator (the SDK's
            # RandomIdGenerator, which `setup_tracing` keeps); neither may be 0.
            bits = getrandbits(192)
            trace_id, span_id = bits >> 64, bits & _LOW_64
            if not (trace_id and span_id):
                trace_id, span_id = ids.generate_trace_id(), ids.generate_span_id()
            if tracing.root_bound is not None:
                sampled = trace_id & _LOW_64 < tracing.root_bound
            else:
                decision = tracing.sampler.should_sample(None, trace_id, method, SpanKind.SERVER)
                sampled, state = decision.decision is Decision.RECORD_AND_SAMPLE, decision.trace_state
            flags = _ROOT_FLAGS[sampled]
        else:
            trace_id = parent.trace_id
            decision = tracing.sampler.should_sample(parent_context, trace_id, method, SpanKind.SERVER)
            sampled, state = decision.decision is Decision.RECORD_AND_SAMPLE, decision.trace_state
            flags = _FLAGS[sampled, parent.trace_flags.random_trace_id]
            span_id = ids.generate_span_id()
        self._trace_id, self._span_id, self._flags, self._state = trace_id, span_id, flags, state
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
        # What `otel_context.attach(trace.set_span_in_context(...))` does, without its three calls
        # (this runs on every request): the current context with this span in it.
        current = _CURRENT.get()
        span = _InContext(self)
        self._token = _CURRENT.set(
            Context({**current, _SPAN_KEY: span}) if current else Context({_SPAN_KEY: span})
        )
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
        return hex128(self._trace_id), hex64(self._span_id)

    def finish(self, method: str, route: str, status: int) -> None:
        """Name the span after its route and set the status (the edge knows them at the end)."""
        if self._start:
            self._name = f"{method} {route}"
            self._attributes["http.route"] = route
            self._attributes["http.response.status_code"] = status
            if status >= 500:
                self._status = _ERROR

    def __exit__(self, *exc: object) -> None:
        try:
            _CURRENT.reset(self._token)
        except ValueError:  # exited in another context than entered (what `otel_context.detach` logs)
            log.exception("the server span's context could not be detached")
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
