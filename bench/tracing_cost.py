"""The CPU a request's server span costs its process, by sampler: the span entered and finished as the
edge does (keel.core.spans.server_span), spans exported as in production (batch processor, OTLP/JSON)
to a receiver in another process that only reads them, at a steady 5,000 requests a second so the
exporter keeps up. The pacing loop's own CPU is measured alone and subtracted.

Run: .venv/bin/python -m bench.tracing_cost [--requests 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.procs import free_port

from keel.core import spans, telemetry

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


def request() -> None:
    with spans.server_span(SCOPE) as span:
        span.finish("GET", "/order/{order_uid}", 200)


def paced_cpu_us(requests: int, work: bool) -> float:
    """CPU µs per request of `requests` at RATE per second, then the exporter's 5 s batch timer."""
    began_cpu, began = time.process_time(), time.perf_counter()
    for i in range(requests):
        if work:
            request()
        if i % 200 == 199:
            while time.perf_counter() - began < (i + 1) / RATE:
                time.sleep(0.0005)
    time.sleep(5.5)
    return (time.process_time() - began_cpu) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        time.sleep(0.5)
        pacing = paced_cpu_us(args.requests, work=False)
        print(
            f"server span CPU per request ({args.requests:,} requests at {RATE:,}/s; pacing {pacing:.2f} µs subtracted)"
        )
        for sampler, ratio in SAMPLERS:
            telemetry.setup_tracing(
                "tracing-cost", f"http://127.0.0.1:{port}", sampler=telemetry.make_sampler(sampler, ratio)
            )
            try:
                cost = paced_cpu_us(args.requests, work=True) - pacing
            finally:
                telemetry.shutdown_tracing()
            print(f"  {sampler} {ratio or ''}".ljust(34) + f"{cost:6.2f} µs")
    finally:
        receiver.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
