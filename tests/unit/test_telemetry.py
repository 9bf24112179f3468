"""Tracing through the same setup as production (an in-memory exporter in place of OTLP): one server
span per request, none for probes and scrapes, trace context across the bus, batch spans with links,
trace ids and the access line in the logs, the sampler variables."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

import httpx
import orjson
import pytest
from fastapi import APIRouter
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from keel.core import telemetry
from keel.core.app import create_app
from keel.core.bus.message import Message, OutgoingMessage
from keel.core.client_spans import UnderSampled
from keel.core.events import Event, encode
from keel.core.fastpath import FastPost, FastResponse, FastRoute, FastRoutes
from keel.core.logging import access_log, setup_logging
from keel.core.settings import Settings
from keel.core.spans import process_batch, process_one, start_sending

Finished = Callable[[], Sequence[ReadableSpan]]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans() -> Iterator[Finished]:
    exporter = InMemorySpanExporter()
    telemetry.setup_tracing(
        "test", None, sampler=telemetry.make_sampler("always_on", None), exporter=exporter
    )

    def finished() -> Sequence[ReadableSpan]:
        tracing = telemetry.active()
        assert tracing is not None
        tracing.provider.force_flush()
        return exporter.get_finished_spans()

    yield finished
    telemetry.shutdown_tracing()


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    root, access = logging.getLogger(), logging.getLogger("keel.access")
    saved = root.handlers[:], root.level, access.handlers[:], access.propagate
    setup_logging("INFO", json=True)
    stream = io.StringIO()
    for logger in (root, access):
        logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]

    def lines() -> list[dict[str, object]]:
        access_log().write_pending()  # written once per event-loop turn: the current one's too
        return [orjson.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.handlers[:], root.level, access.handlers[:], access.propagate = saved


def delivered(message: OutgoingMessage, offset: int = 0) -> Message:
    return Message(message.topic, 0, offset, message.key, message.value, message.headers)


def test_tracing_off_adds_no_headers_and_no_spans():
    assert not telemetry.enabled()
    assert Event("t", {}).headers == ()
    assert start_sending([OutgoingMessage("t", b"{}")]) is None


def test_a_consumer_span_continues_the_trace_of_the_send_span(spans: Finished):
    sending = start_sending([encode(Event("route.confirmed", {"route_id": "r"}, key="r"), "x", "bare")])
    assert sending is not None
    sending.acked([(3, 41)])
    with process_one(delivered(sending.messages[0], 41), "orchestrator"):
        pass
    send, process = spans()
    assert (send.name, send.kind, process.name, process.kind) == (
        "send x",
        SpanKind.PRODUCER,
        "process x",
        SpanKind.CONSUMER,
    )
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert send.attributes is not None and process.attributes is not None
    assert send.attributes["messaging.system"] == "kafka"
    assert send.attributes["messaging.destination.partition.id"] == "3"
    assert send.attributes["messaging.kafka.offset"] == 41
    assert process.attributes["messaging.consumer.group.name"] == "orchestrator"
    assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]


def test_a_batch_span_links_every_record_and_is_a_root_when_they_come_from_many_traces(spans: Finished):
    records = []
    for n in range(3):
        with telemetry.active().tracer.start_as_current_span(f"request {n}"):  # type: ignore[union-attr]
            records.append(delivered(encode(Event("orders", {"n": n}), "orders", "bare"), n))
    with process_batch("orders", 0, records, "order-svc"):
        pass
    batch = spans()[-1]
    assert batch.name == "process orders" and batch.parent is None
    assert len(batch.links) == 3
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 3


def test_a_batch_of_one_trace_continues_it_and_events_it_causes_stay_in_their_own_trace(spans: Finished):
    tracer = telemetry.active().tracer  # type: ignore[union-attr]
    with tracer.start_as_current_span("produce") as produce:
        records = [delivered(encode(Event("t", {"n": n}), "t", "bare"), n) for n in range(2)]
    with tracer.start_as_current_span("elsewhere"):
        other = Event("t", {})
    with process_batch("t", 0, records, "g") as batch:
        same = Event("u", {}, headers=telemetry.trace_headers(records[0].headers))
        caused = Event("u", {}, headers=telemetry.trace_headers(other.headers))
    assert batch.get_span_context().trace_id == produce.get_span_context().trace_id
    assert telemetry.carrier(same.headers)["traceparent"].split("-")[2] == format(
        batch.get_span_context().span_id, "016x"
    )
    assert caused.headers == other.headers


async def test_one_server_span_per_request_and_none_for_probes_and_scrapes(spans: Finished, log_lines):
    app = create_app(title="traced", settings=Settings(_env_file=None))
    headers = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "x-request-id": "req-1"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        assert (await client.get("/nowhere", headers=headers)).status_code == 404
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
    (server,) = spans()
    assert server.kind == SpanKind.SERVER and server.name == "GET unmatched"
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 404
    (access,) = [line for line in log_lines() if line["logger"] == "keel.access"]
    assert access["method"] == "GET" and access["route"] == "unmatched" and access["status"] == 404
    assert access["request_id"] == "req-1" and access["trace_id"] == TRACE_ID
    assert access["span_id"] == format(server.context.span_id, "016x")
    assert isinstance(access["duration_ms"], float)


async def test_access_log_is_on_by_default_and_off_with_the_setting(log_lines, monkeypatch):
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    async def paths(settings: Settings) -> list[dict[str, object]]:
        app = create_app(title="t", settings=settings, routers=[router])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
            await client.get("/items/7")
            await client.get("/healthz")
        return [line for line in log_lines() if line["logger"] == "keel.access"]

    (line,) = await paths(Settings(_env_file=None))
    assert line["route"] == "/items/{item_id}" and line["status"] == 200 and "trace_id" not in line
    monkeypatch.setenv("ACCESS_LOG", "false")
    assert len(await paths(Settings(_env_file=None))) == 1  # the first app's line only


def test_the_default_sampler_keeps_a_tenth_of_new_traces_and_follows_the_caller():
    sampler = telemetry.make_sampler(None, None)
    assert isinstance(sampler, ParentBased)
    assert "0.1" in sampler.get_description()
    ratio = telemetry.make_sampler("traceidratio", 0.25)
    assert isinstance(ratio, TraceIdRatioBased) and ratio.rate == 0.25
    assert telemetry.make_sampler("parentbased_always_off", None).get_description().startswith("ParentBased")


@pytest.mark.parametrize(
    ("embedded", "kept"),
    [(True, "AlwaysOnSampler"), (False, "TraceIdRatioBased{0.1}")],
    ids=["keel up: every trace", "keel serve and worker: a tenth"],
)
def test_without_sampler_settings_a_process_keeps_what_its_command_is_for(embedded, kept):
    from keel.cityguide.delivery.spec import SPEC as DELIVERY
    from keel.core.runtime import build_app

    settings = Settings.model_validate(
        {"otel_exporter_otlp_endpoint": "http://127.0.0.1:9", "secret": "s" * 32}
    )
    build_app([DELIVERY], settings, run_workers=False, embedded=embedded)
    try:
        tracing = telemetry.active()
        assert tracing is not None
        # Parent-based either way: a caller's decision is followed.
        assert tracing.sampler.get_description().startswith(f"ParentBased{{root:{kept},")
    finally:
        telemetry.shutdown_tracing()


def test_sampler_settings_take_the_standard_variables(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    settings = Settings(_env_file=None)
    assert (settings.otel_traces_sampler, settings.otel_traces_sampler_arg) == (
        "parentbased_traceidratio",
        0.5,
    )
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with pytest.raises(ValueError):
        Settings(_env_file=None)


async def test_a_fast_route_keeps_its_server_span_and_a_declined_one_makes_no_second(
    spans: Finished, log_lines
):
    """One code path: tracing on, the fast routes still answer first and make the one server span; a
    fast route that declines (its cache missed) hands the same span to the full stack."""
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id, "source": "stack"}

    async def from_cache(scope: Scope, params: Mapping[str, str]) -> FastResponse | None:
        return FastResponse(b'{"source":"fast"}') if params["item_id"] == "hot" else None

    fast = FastRoutes()
    app = create_app(title="t", settings=Settings(_env_file=None), routers=[router], fast_routes=fast)
    fast.add(
        [FastRoute("/items/{item_id}", from_cache, awaits_io=False)], served=[("GET", "/items/{item_id}")]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        hot = await client.get("/items/hot", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
        cold = await client.get("/items/cold")
    assert hot.json() == {"source": "fast"} and cold.json() == {"id": "cold", "source": "stack"}
    servers = [s for s in spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == ["GET /items/{item_id}", "GET /items/{item_id}"]
    assert format(servers[0].context.trace_id, "032x") == TRACE_ID
    assert [s.attributes["http.response.status_code"] for s in servers if s.attributes] == [200, 200]
    lines = [line for line in log_lines() if line["logger"] == "keel.access"]
    assert [(line["route"], line.get("trace_id")) for line in lines] == [
        ("/items/{item_id}", TRACE_ID),
        ("/items/{item_id}", format(servers[1].context.trace_id, "032x")),
    ]


class Note(BaseModel):
    text: str


async def test_a_fast_post_keeps_its_server_span_and_one_it_declines_makes_no_second(spans: Finished):
    """The same for a POST at the edge: answered there, or declined (a body its model refuses) and
    answered by the route that reads the same body: one server span each, under the route."""
    router = APIRouter()

    @router.post("/notes", status_code=201)
    async def add_note(note: Note) -> dict[str, str]:
        return {"text": note.text, "source": "stack"}

    async def at_edge(scope: Scope, params: Mapping[str, str], body: bytes) -> FastResponse | None:
        try:
            note = Note.model_validate_json(body)
        except ValidationError:
            return None
        return FastResponse(orjson.dumps({"text": note.text, "source": "fast"}), 201)

    fast = FastRoutes()
    app = create_app(title="t", settings=Settings(_env_file=None), routers=[router], fast_routes=fast)
    fast.add([FastPost("/notes", at_edge, 1024)], served=[("POST", "/notes")])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        answered = await client.post("/notes", json={"text": "hi"})
        declined = await client.post("/notes", json={"text": 5})
    assert answered.status_code == 201 and answered.json() == {"text": "hi", "source": "fast"}
    assert declined.status_code == 422 and declined.json()["error"]["details"][0]["field"] == "body.text"
    servers = [s for s in spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in servers] == ["POST /notes", "POST /notes"]
    assert [s.attributes["http.response.status_code"] for s in servers if s.attributes] == [201, 422]


@pytest.fixture
def ratio_spans() -> Iterator[tuple[Finished, TraceIdRatioBased]]:
    exporter = InMemorySpanExporter()
    root = TraceIdRatioBased(0.5)
    telemetry.setup_tracing("test", None, sampler=ParentBased(root), exporter=exporter)

    def finished() -> Sequence[ReadableSpan]:
        telemetry.active().provider.force_flush()  # type: ignore[union-attr]
        return exporter.get_finished_spans()

    yield finished, root
    telemetry.shutdown_tracing()


async def test_server_spans_keep_the_traces_the_sampler_keeps_and_every_request_has_trace_ids(
    ratio_spans: tuple[Finished, TraceIdRatioBased], log_lines
):
    """A new trace's sampling is decided without an SDK span (keel.core.spans): the traces recorded
    are the ones the SDK's own sampler keeps, and an unsampled request still logs its trace ids."""
    finished, root = ratio_spans
    app = create_app(title="t", settings=Settings(_env_file=None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        for _ in range(200):
            await client.get("/nowhere")
    lines = [line for line in log_lines() if line["logger"] == "keel.access"]
    traces = [int(str(line["trace_id"]), 16) for line in lines]
    assert len(set(traces)) == 200
    kept = {t for t in traces if root.should_sample(None, t, "GET").decision.is_sampled()}
    recorded = finished()
    assert 40 < len(kept) < 160  # half, give or take
    assert {span.context.trace_id for span in recorded} == kept
    assert all(span.parent is None and span.name == "GET unmatched" for span in recorded)


async def test_a_caller_s_decision_and_trace_state_are_followed(
    ratio_spans: tuple[Finished, TraceIdRatioBased], log_lines
):
    finished, _ = ratio_spans
    router = APIRouter()

    @router.get("/carried")
    async def carried() -> dict[str, object]:
        logging.getLogger("test").info("handled")
        recording = trace.get_current_span().is_recording()
        return {**telemetry.carrier(Event("t", {}).headers), "recording": recording}

    app = create_app(title="t", settings=Settings(_env_file=None), routers=[router])
    caller = "00f067aa0ba902b7"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        dropped = await client.get("/carried", headers={"traceparent": f"00-{TRACE_ID}-{caller}-00"})
        kept = await client.get(
            "/carried",
            headers={"traceparent": f"00-{TRACE_ID}-{caller}-01", "tracestate": "vendor=v1"},
        )
    # The events a request emits continue its trace, under its span, with the caller's state.
    _, trace_id, span_id, flags = dropped.json()["traceparent"].split("-")
    assert (trace_id, flags) == (TRACE_ID, "00") and span_id != caller
    assert kept.json()["traceparent"].split("-")[3] == "01"
    assert kept.json()["tracestate"] == "vendor=v1"
    # The span a handler sees records nothing itself (the edge records a sampled one); a line it logs,
    # the access line and its events name the same span.
    assert dropped.json()["recording"] is False and kept.json()["recording"] is False
    lines = log_lines()
    handled = [(line["trace_id"], line["span_id"]) for line in lines if line["event"] == "handled"]
    accessed = [(line["trace_id"], line["span_id"]) for line in lines if line["logger"] == "keel.access"]
    assert handled == accessed
    assert [span for _, span in accessed] == [r.json()["traceparent"].split("-")[2] for r in (dropped, kept)]
    (server,) = finished()  # the caller kept one trace: that request's span only
    assert server.parent is not None and format(server.parent.span_id, "016x") == caller
    assert kept.json()["traceparent"].split("-")[2] == format(server.context.span_id, "016x")
    assert server.name == "GET /carried" and server.attributes is not None
    assert server.attributes["http.route"] == "/carried" and server.attributes["url.path"] == "/carried"


def _client_tracer() -> trace.Tracer:
    """The client instrumentations' tracer over the fixture's processor (its setup installs none)."""
    tracing = telemetry.active()
    assert tracing is not None and tracing.clients is None
    return UnderSampled(tracing.processor, tracing.resource).get_tracer("client", "1.0")


def test_client_spans_are_made_only_under_a_sampled_span(spans: Finished):
    """A Redis command or a statement under an unsampled request costs no span (most requests are
    not sampled); under a sampled one it is a child span."""
    tracer = _client_tracer()
    unsampled = SpanContext(int(TRACE_ID, 16), 0xAB, True, TraceFlags(0))
    under_unsampled = trace.set_span_in_context(NonRecordingSpan(unsampled))
    with tracer.start_as_current_span("GET", context=under_unsampled) as span:
        assert not span.is_recording() and span.get_span_context() == unsampled
    assert not tracer.start_span("GET", context=under_unsampled).is_recording()
    assert not tracer.start_span("GET", context=otel_context.Context()).is_recording()  # no parent at all
    main = telemetry.active().tracer  # type: ignore[union-attr]
    with main.start_as_current_span("request"), tracer.start_as_current_span("SELECT") as span:
        assert span.is_recording()
    select, request = spans()
    assert select.name == "SELECT" and select.parent is not None
    assert select.parent.span_id == request.context.span_id


def test_a_client_span_is_recorded_as_the_sdk_records_one(spans: Finished):
    """Under a sampled span the client span is Keel's (no SDK span): the collector still gets its
    name, kind, attributes, scope, status and the exception of a failed call."""
    tracer = _client_tracer()
    main = telemetry.active().tracer  # type: ignore[union-attr]
    with main.start_as_current_span("request") as request:
        with tracer.start_as_current_span(
            "SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        ) as ok:
            ok.set_attribute("db.statement", "SELECT 1")
            inner = trace.get_current_span()
        with pytest.raises(ConnectionError), tracer.start_as_current_span("GET", kind=SpanKind.CLIENT):
            raise ConnectionError("refused")
    assert inner is ok  # current while the call runs
    select, get, outer = spans()
    assert outer.context.span_id == request.get_span_context().span_id
    for client in (select, get):
        assert client.kind is SpanKind.CLIENT and client.parent is not None
        assert client.parent.span_id == outer.context.span_id
        assert client.context.trace_id == outer.context.trace_id and client.context.trace_flags.sampled
        assert client.instrumentation_scope is not None and client.instrumentation_scope.name == "client"
        assert client.start_time is not None and client.end_time is not None
        assert client.start_time <= client.end_time
    assert dict(select.attributes or {}) == {"db.system": "postgresql", "db.statement": "SELECT 1"}
    assert select.status.status_code is StatusCode.UNSET
    assert get.status.status_code is StatusCode.ERROR and "refused" in (get.status.description or "")
    (exception,) = get.events
    assert exception.name == "exception" and exception.attributes is not None
    assert exception.attributes["exception.type"] == "ConnectionError"
