"""The CPU a request's server span costs its process, by sampler: the span entered and finished as the
edge does (keel.core.server_spans.server_span), spans exported as in production (batch processor, OTLP/JSON)
to a receiver in another process that only reads them, at a steady 5,000 requests a second so the
exporter keeps up. The pacing loop's own CPU is measured alone and subtracted. Then the same with
the request's access line (on by default), which carries the span's ids: tracing's share of it is
the traced figure less the line alone with tracing off.

Run: .venv/bin/python -m bench.tracing_cost [--requests 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

from bench.procs import free_port
from opentelemetry.trace import SpanKind

from keel.core import server_spans, telemetry
from keel.core.logging import AccessLog

RATE = 5_000  # every trace kept, the exporter keeps up at this rate (no span dropped)
# (OTEL_TRACES_SAMPLER, its argument): never, `keel serve`'s default, always.
SAMPLERS = (
    ("parentbased_always_off", None),
    ("parentbased_traceidratio", 0.1),
    ("parentbased_always_on", None),
)
# What a wrk request carries: no traceparent, so the sampler decides a new trace.
SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/order/b563feb7b2b84b6test",
    "scheme": "http",
    "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"x-user-id", b"bench")],
}
# A receiver that reads each POST and answers 200: no decoding in the measured process.
RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


ROUTE = "/order/{order_uid}"
REDIS_ATTRIBUTES = {
    "db.system": "redis",
    "db.statement": "EVALSHA ? ? ?",
    "net.peer.name": "127.0.0.1",
    "net.peer.port": 6379,
    "db.redis.database_index": 0,
}


@contextlib.contextmanager
def receiving() -> Iterator[str]:
    """The OTLP endpoint of a RECEIVER in a process of its own, for as long as the block runs."""
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        receiver.kill()


def request(line: AccessLog | None) -> None:
    """A request's span as the edge makes it, and its access line (with the span's ids) if `line`."""
    if telemetry.active() is None:  # tracing off: the line alone, the baseline of its cost
        assert line is not None
        line.request("GET", ROUTE, 200, 0.5)
        return
    with server_spans.server_span(SCOPE) as span:
        span.finish("GET", ROUTE, 200)
        if line is not None:
            line.request("GET", ROUTE, 200, 0.5, span)


def paced_cpu_us(requests: int, work: bool, line: AccessLog | None = None) -> float:
    """CPU µs per request of `requests` at RATE per second, then the exporter's 5 s batch timer."""
    began_cpu, began = time.process_time(), time.perf_counter()
    for i in range(requests):
        if work:
            request(line)
        if i % 200 == 199:
            while time.perf_counter() - began < (i + 1) / RATE:
                time.sleep(0.0005)
    time.sleep(5.5)
    return (time.process_time() - began_cpu) / requests * 1e6


def traced(requests: int, endpoint: str, sampler: str, ratio: float | None, line: AccessLog | None) -> float:
    telemetry.setup_tracing("tracing-cost", endpoint, sampler=telemetry.make_sampler(sampler, ratio))
    try:
        return paced_cpu_us(requests, work=True, line=line)
    finally:
        telemetry.shutdown_tracing()


def client_span_us(endpoint: str, spans: int = 20_000) -> float:
    """CPU µs of one client span under a sampled request, as the Redis instrumentation makes one
    (five attributes), recorded and handed to the exporter (whose thread's share is counted)."""
    telemetry.setup_tracing(
        "tracing-cost",
        endpoint,
        sampler=telemetry.make_sampler("parentbased_always_on", None),
        client_spans=True,
    )
    tracing = telemetry.active()
    assert tracing is not None and tracing.clients is not None
    tracer = tracing.clients.get_tracer("opentelemetry.instrumentation.redis")

    def run(count: int) -> None:
        with server_spans.server_span(SCOPE):
            for i in range(count):
                with tracer.start_as_current_span("EVALSHA", kind=SpanKind.CLIENT) as span:
                    span.set_attributes(REDIS_ATTRIBUTES)
                if i % 200 == 199:
                    time.sleep(200 / RATE)  # paced as the requests are, so the exporter keeps up
        tracing.provider.force_flush()

    try:
        run(2_000)  # the exporter's connection, first calls
        began = time.process_time()
        run(spans)
        return (time.process_time() - began) / spans * 1e6
    finally:
        telemetry.shutdown_tracing()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    with receiving() as endpoint:
        pacing = paced_cpu_us(args.requests, work=False)
        print(
            f"server span CPU per request ({args.requests:,} requests at {RATE:,}/s; pacing {pacing:.2f} µs subtracted)"
        )
        for sampler, ratio in SAMPLERS:
            print(
                f"  {sampler} {ratio or ''}".ljust(34)
                + f"{traced(args.requests, endpoint, sampler, ratio, None) - pacing:6.2f} µs"
            )
        # The access line (on by default) carries the span's ids: what tracing adds to it.
        with open(os.devnull, "w") as devnull:
            line = AccessLog(json=True)
            line.setStream(devnull)
            alone = paced_cpu_us(args.requests, work=True, line=line) - pacing
            print(f"with its access line (JSON); tracing off, the line alone: {alone:.2f} µs")
            for sampler, ratio in SAMPLERS:
                cost = traced(args.requests, endpoint, sampler, ratio, line) - pacing
                print(
                    f"  {sampler} {ratio or ''}".ljust(34)
                    + f"{cost:6.2f} µs (tracing's share {cost - alone:.2f})"
                )
        print(f"a client span under a sampled request (Redis command): {client_span_us(endpoint):.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
