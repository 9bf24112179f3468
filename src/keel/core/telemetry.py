"""OpenTelemetry: traces exported when OTEL_EXPORTER_OTLP_ENDPOINT is set, and trace context
carried across the bus in a `traceparent` header (W3C), so one trace spans HTTP → outbox → consumers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from starlette.middleware.opentelemetry import OpenTelemetryMiddleware

tracer = trace.get_tracer("keel")

Headers = Iterable[tuple[str, bytes]]


def setup_tracing(service_name: str, endpoint: str | None, exporter: SpanExporter | None = None) -> bool:
    """Install a tracer provider exporting over OTLP/HTTP; a no-op (tracing off) without an endpoint."""
    if exporter is None and not endpoint:
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")  # type: ignore[union-attr]
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def instrument_app(app: FastAPI, tracer_provider: trace.TracerProvider | None = None) -> None:
    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls=r".*/(healthz|readyz|metrics)$",
        tracer_provider=tracer_provider,
    )


def inject_headers() -> tuple[tuple[str, bytes], ...]:
    """The current trace context as message headers (empty when no span is active)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((k, v.encode()) for k, v in carrier.items())


def headers_to_carrier(headers: Headers) -> dict[str, str]:
    return {k: v.decode("latin-1") for k, v in headers if k in ("traceparent", "tracestate")}


@contextmanager
def consume_span(name: str, headers: Headers, **attributes: str | int) -> Iterator[trace.Span]:
    """A consumer span whose parent is the producer's context carried in the message headers."""
    parent = propagate.extract(headers_to_carrier(headers))
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(name, kind=trace.SpanKind.CONSUMER, attributes=attributes) as span:
            yield span
    finally:
        otel_context.detach(token)
