"""Runs the flows at once, timing each and turning its end (done, failed, skipped) into a FlowResult."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from keel.demo.flows import FLOWS
from keel.demo.steps import FlowResult, FlowSkipped
from keel.demo.targets import Targets

# Told about every step as it happens: (flow name, step text).
Listener = Callable[[str, str], None]


async def run_flow(
    name: str, client: httpx.AsyncClient, targets: Targets, timeout_s: float, listener: Listener
) -> FlowResult:
    flow, _ = FLOWS[name]
    result = FlowResult(name)

    def step(text: str) -> None:
        result.steps.append(text)
        listener(name, text)

    started = time.monotonic()
    try:
        await flow(client, targets, step, timeout_s)
        result.status = "ok"
    except FlowSkipped as exc:
        result.status, result.detail = "skipped", str(exc)
    except Exception as exc:  # one flow's error is its result, not the end of the others
        result.status, result.detail = "failed", f"{type(exc).__name__}: {exc}"
    result.elapsed_s = time.monotonic() - started
    return result


async def run_all(
    client: httpx.AsyncClient,
    targets: Targets,
    *,
    timeout_s: float = 120.0,
    names: list[str] | None = None,
    listener: Listener = lambda name, step: None,
) -> list[FlowResult]:
    """Every flow (or those named) concurrently; one result per flow, in the order asked."""
    chosen = names or list(FLOWS)
    return list(await asyncio.gather(*(run_flow(n, client, targets, timeout_s, listener) for n in chosen)))
