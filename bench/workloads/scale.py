"""How the design scales out on this machine: the create and the cached list again with two API
processes behind one port (`keel serve tickets --workers 2`, the worker apart as deployed), beside the
same with one process measured in the same run. No target: the machine has 2 cores, which the
processes share with PostgreSQL, the worker and wrk; the ratio says what a second process buys here."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from bench import loadgen
from bench.report import Row, Sample, median
from bench.workloads import Context
from bench.workloads.tickets import LIST_TICKETS, TicketCreate, filled_list, ticket_service

PROCESSES = 2


class _TwoApiProcesses(TicketCreate):
    API_ARGS = ("--api-only", "--workers", str(PROCESSES))


class ScaleOut:
    name = "scale-out"

    async def run(self, ctx: Context) -> Sequence[Row]:
        one, _, _ = await TicketCreate().measure(ctx, f"bench-scale1-{ctx.run_id}", profiled=False)
        two, _, note = await _TwoApiProcesses().measure(ctx, f"bench-scale2-{ctx.run_id}", profiled=False)
        listed = {n: await self._list(ctx, n) for n in (1, PROCESSES)}
        note_list = f"`keel serve tickets --workers {PROCESSES}` vs `keel serve tickets`; the gain, no target"
        return [
            Row(
                f"POST /v1/tickets + Idempotency-Key, {PROCESSES} API processes vs 1 (scale-out)",
                median(two),
                median(one),
                "req/s",
                None,
                note=f"{note}; limit column: the same with 1 API process, this run",
            ),
            Row(
                f"GET /v1/tickets (list of {LIST_TICKETS}, cache hit), {PROCESSES} processes vs 1 (scale-out)",
                listed[PROCESSES],
                listed[1],
                "req/s",
                None,
                note=note_list,
            ),
        ]

    async def _list(self, ctx: Context, processes: int) -> Sample:
        user, path = f"bench-scale-list-{ctx.run_id}", "/v1/tickets"
        args = ("--workers", str(processes)) if processes > 1 else ()
        async with ticket_service(ctx, extra_args=args) as (child, base):
            async with httpx.AsyncClient(base_url=base, headers={"X-User-Id": user}) as client:
                await filled_list(client, path, reads=8 * processes)  # until every process has read it
            figures, _ = await loadgen.measure(ctx.cfg, base, "get", [path, user], server_pid=child.pid)
        return median(figures)
