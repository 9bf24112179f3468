"""The production configuration against the bench's: the cached ticket list and the cached order with
tracing on at `keel serve`'s default sampling (parent-based 10 %, OTLP/HTTP to a receiver on
loopback), the access log on, a rate limit on and verified tokens (`AUTH_MODE=jwt`, HS256, each
request with `Authorization: Bearer`), beside the same service with all four off (`X-User-Id`). The
issue's budget: all of it together costs at most a quarter of a row."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import httpx
import jwt
from bench import loadgen
from bench.loadgen import Target
from bench.procs import free_port, keel_bin, service
from bench.report import Row, Sample, in_turns, median
from bench.workloads import Context
from bench.workloads.memory import MIB, SAMPLE_S, peak_while, rss
from bench.workloads.orders import stored_order
from bench.workloads.tickets import LIST_TICKETS, TicketCreate, filled_list, ticket_service
from tests.support.otlp import OtlpReceiver

TARGET_RATIO = 0.75
TRACING_TARGET = 0.85  # the one-code-path issue: tracing at the default sampling costs at most 15 %
OFF = {
    "ACCESS_LOG": "false",
    "TICKETS_RATE_LIMIT": "",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    "AUTH_MODE": "header",
}
# A limit the load never reaches (a one-second window, so the moving window holds ~1 s of requests):
# the limiter runs on every request, one Redis round trip each.
LIMIT = "100000/second"


def production(sink: OtlpReceiver, jwt_secret: str) -> dict[str, str]:
    return {
        "ACCESS_LOG": "true",
        "TICKETS_RATE_LIMIT": LIMIT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "AUTH_MODE": "jwt",
        "AUTH_JWT_SECRET": jwt_secret,
    }


def identity_args(user: str, env: dict[str, str]) -> list[str]:
    """What bench/lua/get.lua sends as the caller: a signed token in jwt mode, else the user id."""
    secret = env.get("AUTH_JWT_SECRET")
    if secret is None:
        return [user]
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
    return [f"Bearer {token}", "Authorization"]


def identity_headers(args: list[str]) -> dict[str, str]:
    return {args[1] if len(args) > 1 else "X-User-Id": args[0]}


class ProductionConfig:
    name = "production-config"

    async def run(self, ctx: Context) -> Sequence[Row]:
        rows: list[Row] = []
        self.memory: dict[str, tuple[int, int]] = {}
        with OtlpReceiver(keep=False) as sink:
            on = production(sink, secrets.token_urlsafe(32))
            # Tracing alone, at the default sampling; and everything with every trace kept (no target).
            tracing = {**OFF, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
            configs = (
                ("off", OFF),
                ("on", on),
                ("tracing", tracing),
                # Tracing with nothing sampled: the per-request path alone, no span recorded or sent.
                ("unsampled", {**tracing, "OTEL_TRACES_SAMPLER": "parentbased_always_off"}),
                ("all", {**on, "OTEL_TRACES_SAMPLER": "always_on"}),
            )
            create = {
                k: median(
                    (await TicketCreate().measure(ctx, f"bench-prod-create-{k}-{ctx.run_id}", env, False))[0]
                )
                for k, env in (("off", {}), ("tracing", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}))
            }
            ticket_figures = await self._interleaved(ctx, "tickets", self._tickets, configs)
            order_figures = await self._interleaved(ctx, "orders", self._order, configs)
            spans = sink.received
        note = (
            f"on: OTEL_EXPORTER_OTLP_ENDPOINT=<loopback receiver> (default sampler: parent-based 10 %; "
            f"{spans:,} spans received), ACCESS_LOG=true, TICKETS_RATE_LIMIT={LIMIT} (Redis), "
            "AUTH_MODE=jwt (HS256 bearer token on every request); limit column: the same service with "
            "all four off (X-User-Id)"
        )
        for title, samples in (
            (f"GET /v1/tickets (list of {LIST_TICKETS}, cache hit), production config", ticket_figures),
            ("GET /order/{id} from cache, production config", order_figures),
        ):
            rows += [
                in_turns(title, samples["on"], samples["off"], TARGET_RATIO, note),
                in_turns(
                    f"{title}: tracing alone",
                    samples["tracing"],
                    samples["off"],
                    TRACING_TARGET,
                    "OTEL_EXPORTER_OTLP_ENDPOINT=<loopback receiver> only (default sampler, parent-based "
                    "10 %); the other three off",
                ),
                in_turns(
                    f"{title}: tracing alone, nothing sampled",
                    samples["unsampled"],
                    samples["off"],
                    None,
                    "as tracing alone with OTEL_TRACES_SAMPLER=parentbased_always_off: what every request "
                    "pays (its span's ids and context) without a span recorded or exported",
                ),
                in_turns(
                    f"{title}, every trace kept",
                    samples["all"],
                    samples["off"],
                    None,
                    "as above with OTEL_TRACES_SAMPLER=always_on: the cost of tracing every request",
                ),
            ]
        rows.append(
            Row(
                "POST /v1/tickets + Idempotency-Key: tracing alone",
                create["tracing"],
                create["off"],
                "req/s",
                TRACING_TARGET,
                note="the create row's setup (API and worker apart) with OTEL_EXPORTER_OTLP_ENDPOINT=<loopback "
                "receiver> (parent-based 10 %) on both, against the same untraced, this run",
            )
        )
        rows.append(self._memory_row())
        return rows

    async def _interleaved(
        self,
        ctx: Context,
        service_name: str,
        started: Callable[[Context, dict[str, str]], AbstractAsyncContextManager[Target]],
        configs: Sequence[tuple[str, dict[str, str]]],
    ) -> dict[str, list[Sample]]:
        """Every configuration's service running at once, measured in turns (loadgen.measure_interleaved):
        each configuration's samples in round order; RSS of each idle (before the load) and at its
        peak under it."""
        async with contextlib.AsyncExitStack() as stack:
            targets = [await stack.enter_async_context(started(ctx, env)) for _, env in configs]
            pids = [t.server_pid for t in targets if t.server_pid is not None]
            idle = {pid: rss(pid) for pid in pids}
            samples, peaks = await peak_while(pids, loadgen.measure_interleaved(ctx.cfg, "get", targets))
        for (config, _), target in zip(configs, targets, strict=True):
            if config in ("off", "on") and target.server_pid is not None:
                self.memory[f"`keel serve {service_name}` ({config})"] = (
                    idle[target.server_pid],
                    peaks[target.server_pid],
                )
        return {config: got for (config, _), got in zip(configs, samples, strict=True)}

    def _memory_row(self) -> Row:
        text = "; ".join(
            f"{name}: idle {idle / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB under load"
            for name, (idle, peak) in self.memory.items()
        )
        return Row(
            "RSS per service process, production config (tracing, access log, limit, jwt)",
            None,
            None,
            "",
            None,
            text=text,
            note="psutil (process and children): idle = after its warm-up requests, before the load; "
            f"peak sampled every {SAMPLE_S}s under the rows' load above (each configuration's service "
            "runs through the whole interleaved measurement)",
        )

    @contextlib.asynccontextmanager
    async def _tickets(self, ctx: Context, env: dict[str, str]) -> AsyncIterator[Target]:
        user, path = f"bench-prod-{ctx.run_id}", "/v1/tickets"
        caller = identity_args(user, env)
        async with ticket_service(ctx, extra_env=env) as (child, base):
            async with httpx.AsyncClient(base_url=base, headers=identity_headers(caller)) as client:
                await filled_list(client, path)
            yield Target(base, [path, *caller], child.pid)

    @contextlib.asynccontextmanager
    async def _order(self, ctx: Context, env: dict[str, str]) -> AsyncIterator[Target]:
        order = await stored_order(ctx, f"benchprod{ctx.run_id}")
        port = free_port()
        argv = [keel_bin(), "serve", "orders", "--port", str(port)]
        path = f"/order/{order['order_uid']}"
        async with service(
            argv, {**ctx.service_env(), **env}, ctx.logdir, "keel-serve-orders", port
        ) as child:
            base = f"http://127.0.0.1:{port}"
            caller = identity_args("bench", env)
            async with httpx.AsyncClient(base_url=base, headers=identity_headers(caller)) as client:
                (await client.get(path)).raise_for_status()
            yield Target(base, [path, *caller], child.pid)
