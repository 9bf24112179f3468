"""Liveness, readiness and metrics routes every app carries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from keel.core.envelope import error_response
from keel.core.metrics import DEPENDENCY_UP, render_latest

CHECK_TIMEOUT_S = 2.0
# How often `dependency_up` is refreshed without a `/readyz` request: a Prometheus scrape interval.
PROBE_INTERVAL_S = 15.0
# Liveness paths a seed names besides `/healthz`, per service: seed 003 (videos) checks `/health`.
# Kept here rather than in the service, as every health route is (docs/seed-differences.md).
SEED_LIVENESS_PATHS: dict[str, tuple[str, ...]] = {"videos": ("/health",)}


@dataclass(frozen=True)
class ReadinessCheck:
    """A named probe of one dependency; it raises (or times out) when the dependency is down.

    A dependency that is not `required` leaves the process ready but `degraded`: an API process keeps
    taking requests while the broker is away, since its outbox holds their events until it is back."""

    name: str
    probe: Callable[[], Awaitable[object]]
    required: bool = True


async def probe(checks: Sequence[ReadinessCheck]) -> list[tuple[str, str | None]]:
    """Every check at once: (name, None or why it is down), and `dependency_up` set from the answers."""
    results = await asyncio.gather(*(_run(c) for c in checks))
    for name, err in results:
        DEPENDENCY_UP.labels(name).set(1 if err is None else 0)
    return results


@asynccontextmanager
async def probing(
    checks: Callable[[], Sequence[ReadinessCheck]], interval_s: float = PROBE_INTERVAL_S
) -> AsyncIterator[None]:
    """`dependency_up` kept current while the process runs, whether anything asks `/readyz` or not:
    the alert on it and the dashboard read `/metrics`, and health checks ask `/healthz`."""

    async def every_interval() -> None:
        while True:
            await probe(list(checks()))
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(every_interval(), name="dependency-probe")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _run(check: ReadinessCheck) -> tuple[str, str | None]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await check.probe()
    except TimeoutError:
        return check.name, f"no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # a probe reports any failure as "down"; the reason goes to the client
        return check.name, f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
    return check.name, None


def health_router(
    checks: Callable[[], Sequence[ReadinessCheck]], liveness_aliases: Sequence[str] = ()
) -> APIRouter:
    """`checks` is read at request time: dependencies are wired during start-up, after routes exist.
    `liveness_aliases`: more paths answering exactly as `/healthz` (SEED_LIVENESS_PATHS)."""
    router = APIRouter(tags=["health"])

    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for path in ("/healthz", *dict.fromkeys(liveness_aliases)):
        summary = "Liveness: the process answers; no I/O" + ("" if path == "/healthz" else " (as /healthz)")
        router.add_api_route(path, healthz, methods=["GET"], summary=summary)

    @router.get(
        "/readyz",
        summary="Readiness: every dependency this process needs answers",
        responses={
            200: {
                "description": "ready, or degraded: an optional dependency (the broker of an API process) is down"
            },
            503: {"description": "A required dependency is down; the message names it"},
        },
    )
    async def readyz() -> Response:
        current = list(checks())
        results = await probe(current)
        status = {name: ("ok" if err is None else err) for name, err in results}
        down = [
            c.name for c, (_, err) in zip(current, results, strict=True) if err is not None and c.required
        ]
        if down:
            return error_response(
                503, "not_ready", f"dependency down: {', '.join(down)}", details={"checks": status}
            )
        degraded = [name for name, err in results if err is not None]
        body: dict[str, object] = {"status": "degraded" if degraded else "ready", "checks": status}
        if degraded:
            body["degraded"] = degraded
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        sampler = getattr(request.app.state, "saturation", None)
        if sampler is not None:
            sampler.sample()  # this process's pools and in-flight count as they are now
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    return router
