"""keel.core.telemetry.Batching: the SDK's batch processor with a hand-over that makes no system call
per span; spans still reach the exporter in batches, spans past a full queue are counted and said
once per interval (not a line each), a forked
child exports its own spans, and an SDK whose internals differ gets the SDK's own hand-over."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from keel.core import telemetry
from keel.core.metrics import REGISTRY
from keel.core.telemetry import DROPS_REPORTED_EVERY_S, Batching


class Collected(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append([s.name for s in spans])
        self.exported.set()
        return SpanExportResult.SUCCESS


def span(name: str, *, sampled: bool = True) -> ReadableSpan:
    context = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED if sampled else 0))
    return ReadableSpan(name, context)


@pytest.fixture
def sdk_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only a full batch or a flush exports


def test_spans_reach_the_exporter_in_batches_of_the_sdk_settings(sdk_settings: None) -> None:
    exporter = Collected()
    processor = Batching(exporter)
    for i in range(4):
        processor.on_end(span(f"s{i}"))
    assert exporter.exported.wait(5)  # a full batch wakes the worker
    processor.on_end(span("unsampled", sampled=False))
    processor.on_end(span("s4"))
    assert processor.force_flush()
    assert exporter.batches == [["s0", "s1", "s2", "s3"], ["s4"]]
    processor.shutdown()
    processor.on_end(span("after shutdown"))
    assert exporter.batches == [["s0", "s1", "s2", "s3"], ["s4"]]


def test_handing_over_a_span_makes_no_system_call(
    sdk_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own hand-over asks os.getpid() for every span (to notice a fork): a system call on the
    # request's path. Its fork hook resets the processor in a child instead.
    processor = Batching(Collected())
    ended = [span(f"s{i}") for i in range(3)]
    asked = 0
    real = os.getpid

    def counting() -> int:
        nonlocal asked
        asked += 1
        return real()

    monkeypatch.setattr(os, "getpid", counting)
    for one in ended:
        processor.on_end(one)
    assert asked == 0
    monkeypatch.undo()
    processor.shutdown()


def test_spans_past_a_full_queue_are_counted_and_said_once_per_interval(
    sdk_settings: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = Collected()
    processor = Batching(exporter)
    blocked, release = threading.Event(), threading.Event()

    def stuck(spans: Sequence[ReadableSpan]) -> SpanExportResult:
        blocked.set()
        release.wait(10)
        return SpanExportResult.SUCCESS

    monkeypatch.setattr(exporter, "export", stuck)
    for i in range(4):
        processor.on_end(span(f"first{i}"))
    assert blocked.wait(5)  # the worker holds the first batch; the queue (8) fills behind it
    before = REGISTRY.get_sample_value("trace_spans_dropped_total", {"reason": "queue_full"}) or 0.0
    for i in range(8 + 500):
        processor.on_end(span(f"s{i}"))
    assert REGISTRY.get_sample_value("trace_spans_dropped_total", {"reason": "queue_full"}) == before + 500
    said = [r.getMessage() for r in caplog.records if "trace export falls behind" in r.getMessage()]
    assert said == [
        "trace export falls behind: 1 spans dropped, its queue of 8 was full; lower "
        "OTEL_TRACES_SAMPLER_ARG or raise OTEL_BSP_MAX_QUEUE_SIZE"
    ]
    assert "Queue full" not in caplog.text  # not the SDK's line per span

    now = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: now() + DROPS_REPORTED_EVERY_S)
    processor.on_end(span("one more"))
    said = [r.getMessage() for r in caplog.records if "trace export falls behind" in r.getMessage()]
    assert said[1].startswith("trace export falls behind: 500 spans dropped")  # the interval's count
    release.set()
    processor.shutdown()


def test_a_forked_child_exports_its_own_spans_and_none_of_its_parent_s(sdk_settings: None) -> None:
    exporter = Collected()
    processor = Batching(exporter)
    processor.on_end(span("parent's"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its exporter got, then leave without running the parent's exit
        try:
            processor.on_end(span("child's"))
            processor.force_flush()
            os.write(write, repr(exporter.batches).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as got:
        reported = got.read()
    os.waitpid(pid, 0)
    assert reported == repr([["child's"]])
    processor.force_flush()
    assert exporter.batches == [["parent's"]]
    processor.shutdown()


def test_an_sdk_without_the_internals_read_gets_its_own_hand_over(
    sdk_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "SDK_INTERNALS", (*telemetry.SDK_INTERNALS, "_renamed"))
    exporter = Collected()
    processor = Batching(exporter)
    assert processor.on_end.__func__ is not Batching.on_end  # type: ignore[attr-defined]
    processor.on_end(span("s"))
    processor.force_flush()
    assert exporter.batches == [["s"]]
    processor.shutdown()
