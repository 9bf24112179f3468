"""Trace context crosses the bus: a consumer span continues the producer's trace."""

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.core.telemetry import consume_span, inject_headers


def test_consumer_span_continues_the_trace_carried_in_headers():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    trace.set_tracer_provider(provider)

    with tracer.start_as_current_span("produce") as producer:
        headers = inject_headers()
    assert dict(headers)["traceparent"].decode().startswith("00-")

    with consume_span("consume tickets.events", headers, topic="tickets.events") as span:
        assert span.get_span_context().trace_id == producer.get_span_context().trace_id

    names = [s.name for s in exporter.get_finished_spans()]
    assert "consume tickets.events" in names


async def test_http_request_with_traceparent_joins_the_callers_trace():
    import httpx

    from keel.core.app import create_app
    from keel.core.settings import Settings
    from keel.core.telemetry import instrument_app

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(title="traced", settings=Settings(_env_file=None))
    instrument_app(app, tracer_provider=provider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        await client.get("/items-unknown", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    spans = exporter.get_finished_spans()
    assert spans
    assert {format(s.context.trace_id, "032x") for s in spans} == {trace_id}
