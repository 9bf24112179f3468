"""The demo on a terminal: a progress bar per flow while it runs, a summary table when it ends."""

from __future__ import annotations

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from keel.core.telemetry import trace_headers
from keel.demo.flows import FLOWS
from keel.demo.scenario import run_all
from keel.demo.steps import FlowResult
from keel.demo.targets import Targets

STYLE = {"ok": "[green]ok[/green]", "failed": "[red]FAILED[/red]", "skipped": "[yellow]skipped[/yellow]"}


async def _trace_context(request: httpx.Request) -> None:
    """The demo's requests join its trace (nothing is added when tracing is off)."""
    request.headers.update({k: v.decode() for k, v in trace_headers()})


async def run(targets: Targets, console: Console, timeout_s: float) -> list[FlowResult]:
    columns = (
        SpinnerColumn(),
        TextColumn("[bold cyan]{task.fields[flow]:<10}[/bold cyan]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            name: progress.add_task("starting", total=steps, flow=name) for name, (_, steps) in FLOWS.items()
        }

        def on_step(name: str, step: str) -> None:
            progress.update(tasks[name], advance=1, description=step)

        async with httpx.AsyncClient(timeout=10.0, event_hooks={"request": [_trace_context]}) as client:
            results = await run_all(client, targets, timeout_s=timeout_s, listener=on_step)
        for result in results:
            progress.update(tasks[result.name], description=STYLE[result.status])
            progress.stop_task(tasks[result.name])
    console.print(summary(results))
    return results


def summary(results: list[FlowResult]) -> Table:
    table = Table(title="keel demo")
    for column in ("flow", "steps", "result", "time"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for r in results:
        steps = "\n".join(r.steps) if r.steps else "-"
        outcome = STYLE[r.status] + (f"\n{r.detail}" if r.detail else "")
        table.add_row(r.name, steps, outcome, f"{r.elapsed_s:.1f}s")
    return table
