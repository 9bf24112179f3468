"""OpenTelemetry: traces exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set, and W3C trace
context carried across the bus in message headers, so one trace spans HTTP → outbox → relay → consumers.

Tracing off (no endpoint) costs one global read at each hook: no provider, no spans, no headers.
The span shapes: the server span in `keel.core.server_spans`, send and process in `keel.core.spans`, client
spans in `keel.core.client_spans`; docs/observability.md shows a trace."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from keel.core.client_spans import UnderSampled
from keel.core.hexids import hex64, hex128
from keel.core.metrics import TRACE_SPANS_DROPPED
from keel.core.otlp_json import JsonSpanExporter

log = logging.getLogger("keel.telemetry")

Headers = Iterable[tuple[str, bytes]]
SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
# What `keel serve` and `keel worker` keep of the traces they start (a caller's decision, carried in
# `traceparent`, is followed): tracing every request cut a cached GET to a tenth (bench/results).
DEFAULT_SAMPLER: SamplerName = "parentbased_traceidratio"
DEFAULT_RATIO = 0.1
# A person's one run of a tool (or `keel up` on their machine) is the trace they came to look at.
KEEP_ALL: SamplerName = "parentbased_always_on"
TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class Tracing:
    provider: TracerProvider
    tracer: trace.Tracer
    # Database and Redis client spans: only under a sampled span (keel.core.client_spans).
    clients: UnderSampled | None
    # What the server span (keel.core.spans) records through without an SDK span: see there.
    sampler: Sampler
    processor: SpanProcessor
    resource: Resource
    scope: InstrumentationScope
    # A root is sampled when the low 64 bits of its trace id are under this bound (the SDK's
    # TraceIdRatioBased rule; 0 for always_off), so a server span decides it in one comparison.
    # None for a sampler of another kind: it is asked.
    root_bound: int | None


# What Batching reads of the SDK's batch processor.
SDK_INTERNALS = ("_queue", "_max_queue_size", "_max_export_batch_size", "_worker_awaken", "_shutdown")
_QUEUE_FULL = TRACE_SPANS_DROPPED.labels("queue_full")
# How often a process says that it drops spans, while it does.
DROPS_REPORTED_EVERY_S = 10.0


class Batching(BatchSpanProcessor):
    """The SDK's batch processor (its queue, worker thread, `OTEL_BSP_*` variables, flush and fork
    handling) with two changes to how an ended span is handed over:

    - A span that finds the queue full (the exporter falls behind) is counted in
      `trace_spans_dropped_total{reason="queue_full"}` and said in one warning every
      DROPS_REPORTED_EVERY_S with the count; the SDK logs a warning for every span it drops, thousands
      of lines a second from the request path of an overloaded process.
    - No `os.getpid()` per span: the SDK compares it with its own to notice a fork, a system call on
      the request's path, while the hook it registers with `os.register_at_fork` already resets the
      processor in a forked child.

    If the SDK's internals are not the ones this reads, every span goes the SDK's way."""

    def __init__(self, exporter: SpanExporter) -> None:
        super().__init__(exporter)
        self._dropped = 0
        self._report_at = 0.0
        batch = self._batch_processor
        if not all(hasattr(batch, name) for name in SDK_INTERNALS) or not hasattr(os, "register_at_fork"):
            self.on_end = super().on_end  # type: ignore[method-assign]

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        batch = self._batch_processor
        queue = batch._queue
        if batch._shutdown:
            batch.emit(span)  # the SDK's: ignored, and said
        elif len(queue) >= batch._max_queue_size:
            self._drop(batch._max_queue_size)
        else:
            queue.appendleft(span)
            if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                batch._worker_awaken.set()

    def _drop(self, queue_size: int) -> None:
        _QUEUE_FULL.inc()
        self._dropped += 1
        now = time.monotonic()
        if now >= self._report_at:
            log.warning(
                "trace export falls behind: %d spans dropped, its queue of %d was full; lower "
                "OTEL_TRACES_SAMPLER_ARG or raise OTEL_BSP_MAX_QUEUE_SIZE",
                self._dropped,
                queue_size,
            )
            self._dropped = 0
            self._report_at = now + DROPS_REPORTED_EVERY_S


def root_bound(sampler: Sampler) -> int | None:
    """`Tracing.root_bound` for the samplers make_sampler builds; None for any other."""
    root = sampler._root if isinstance(sampler, ParentBased) else sampler
    if isinstance(root, TraceIdRatioBased):
        return root.bound
    return 0 if root is ALWAYS_OFF else None


_tracing: Tracing | None = None


def enabled() -> bool:
    return _tracing is not None


def active() -> Tracing | None:
    return _tracing


def make_sampler(
    name: SamplerName | None, arg: float | None, *, default: SamplerName = DEFAULT_SAMPLER
) -> Sampler:
    """The sampler the standard OTEL_TRACES_SAMPLER(_ARG) name; unset: `default` (parent-based at
    10 %). A named ratio sampler without an argument keeps every trace, as the OpenTelemetry spec says."""
    ratio = arg if arg is not None else (DEFAULT_RATIO if name is None else 1.0)
    name = name or default
    root_name = name.removeprefix("parentbased_")
    root = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(root_name) or TraceIdRatioBased(ratio)
    return ParentBased(root) if name.startswith("parentbased_") else root


def setup_tracing(
    service_name: str,
    endpoint: str | None,
    *,
    sampler: Sampler | None = None,
    client_spans: bool = False,
    exporter: SpanExporter | None = None,
) -> bool:
    """Install this process's tracer provider exporting over OTLP/HTTP; False (tracing off) without an
    endpoint or exporter. `client_spans` adds asyncpg and Redis client spans."""
    global _tracing
    if exporter is None and not endpoint:
        return False
    if exporter is None:
        assert endpoint is not None
        exporter = JsonSpanExporter(f"{endpoint.rstrip('/')}/v1/traces")
    shutdown_tracing()  # a second app in one process (tests) replaces the first's provider
    resource = Resource.create({"service.name": service_name})
    processor = Batching(exporter)
    sampler = sampler or make_sampler(None, None)
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(processor)
    clients = None
    if client_spans:
        clients = UnderSampled(processor, resource)
        _instrument_clients(clients)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # for code that asks the global one; set once per process
    _tracing = Tracing(
        provider,
        provider.get_tracer("keel"),
        clients,
        sampler,
        processor,
        resource,
        InstrumentationScope("keel"),
        root_bound(sampler),
    )
    return True


def shutdown_tracing() -> None:
    """Export what is buffered and uninstall the provider (at the end of the app's lifespan)."""
    global _tracing
    current, _tracing = _tracing, None
    if current is None:
        return
    if current.clients is not None:
        _uninstrument_clients()
    current.provider.shutdown()


def _instrument_clients(provider: trace.TracerProvider) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument(tracer_provider=provider)


def _uninstrument_clients() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().uninstrument()


# --- trace context in message headers ---


def carrier(headers: Headers) -> dict[str, str]:
    return {k: v.decode("latin-1") for k, v in headers if k in TRACE_HEADERS}


def extract(headers: Headers) -> Context:
    return propagate.extract(carrier(headers))


def inject(context: Context | None = None) -> tuple[tuple[str, bytes], ...]:
    out: dict[str, str] = {}
    propagate.inject(out, context=context)
    return tuple((k, v.encode()) for k, v in out.items())


def trace_headers(cause: Headers = ()) -> tuple[tuple[str, bytes], ...]:
    """The trace context an event built now carries: the current span's, or — for an event caused by
    a consumed one (`cause` = its headers) while the current span belongs to another trace, as a
    batch of many traces does — the cause's, so each event stays in the trace it came from."""
    if _tracing is None:
        return ()
    if cause:
        carried = tuple((k, v) for k, v in cause if k in TRACE_HEADERS)
        if carried:
            theirs = trace.get_current_span(extract(carried)).get_span_context()
            ours = trace.get_current_span().get_span_context()
            if theirs.is_valid and theirs.trace_id != ours.trace_id:
                return carried
    return inject()


def add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's ids on every line written inside one."""
    if _tracing is not None:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event.setdefault("trace_id", hex128(ctx.trace_id))
            event.setdefault("span_id", hex64(ctx.span_id))
    return event
