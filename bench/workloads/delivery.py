"""Cityguide delivery: GET /delivery/prefetch?next=10 (ten signed links from the Redis ready list)
against a bare ASGI app returning the same bytes. The ready list is written straight into the
bench's private Redis through the service's own store, as its tts.completed consumer would.

Measured twice: as configured (a polled page is answered from the process's recent pages,
PREFETCH_PAGE_CACHE_SEC=1) and with that window off (every request a Redis round trip and ten fresh
signatures), the cost of a page nobody asked for a moment ago."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence

import httpx
from bench import limits, loadgen
from bench.procs import free_port, keel_bin, service
from bench.report import Row, Sample, in_turns, median
from bench.workloads import Context
from bench.workloads.production import TRACING_TARGET
from tests.support.otlp import OtlpReceiver

from keel.cityguide.delivery.settings import DeliverySettings
from keel.cityguide.delivery.store import ReadyAudio, RedisReadyAudioStore
from keel.core.cache import redis_client

TARGET_RATIO = 0.85  # issue 21's target
NEXT = 10  # the page: ten signatures per request
STORY_SECONDS = 30.0


class DeliveryPrefetch:
    name = "delivery-prefetch"

    async def run(self, ctx: Context) -> Sequence[Row]:
        route = f"bench-{ctx.run_id}"
        settings = DeliverySettings()
        client = redis_client(ctx.redis_url)
        try:
            store = RedisReadyAudioStore(client, settings.prefetch_ttl_s, prefix=settings.redis_key_prefix)
            for position in range(NEXT):
                audio = ReadyAudio(uuid.uuid4().hex, f"story-{position}", float(position), STORY_SECONDS)
                await store.put(route, audio)
        finally:
            await client.aclose()
        path = f"/delivery/prefetch?route_id={route}&next={NEXT}"
        async with self.served(ctx, path, {}) as (target, body):
            figures, best, rounds = await limits.against_bare_asgi(ctx.cfg, ctx.logdir, target, body)
        from_store, _ = await self.measure(ctx, path, {"PREFETCH_PAGE_CACHE_SEC": "0"})
        with OtlpReceiver(keep=False) as sink:
            # Traced and untraced side by side, measured in turns: the comparison is the row.
            traced_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
            # Nothing sampled: what every request pays, no span recorded or exported.
            unsampled_env = {**traced_env, "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
            async with (
                self.served(ctx, path, {}) as (plain, _),
                self.served(ctx, path, traced_env) as (traced_target, _),
                self.served(ctx, path, unsampled_env) as (unsampled_target, _),
            ):
                untraced, traced, unsampled = await loadgen.measure_interleaved(
                    ctx.cfg, "get", [plain, traced_target, unsampled_target]
                )
        name = f"GET /delivery/prefetch?next={NEXT} ({NEXT} signed links), 32 conns, vs bare ASGI"
        return [
            Row(
                name,
                median(figures),
                best,
                "req/s",
                TARGET_RATIO,
                note=f"the service and the bare app measured in turns; {rounds}",
            ),
            Row(
                f"{name}: every page from Redis and signed afresh (PREFETCH_PAGE_CACHE_SEC=0, context)",
                median(from_store),
                best,
                "req/s",
                None,
                note="measured after the row above; its limit column is that row's",
            ),
            in_turns(
                f"{name}: tracing on (default sampling) vs the same untraced",
                traced,
                untraced,
                TRACING_TARGET,
                "OTEL_EXPORTER_OTLP_ENDPOINT=<loopback receiver> (parent-based 10 %); limit column: "
                "the same service untraced, both running, measured in turns",
            ),
            in_turns(
                f"{name}: tracing on, nothing sampled, vs the same untraced",
                unsampled,
                untraced,
                None,
                "as above with OTEL_TRACES_SAMPLER=parentbased_always_off, measured in the same turns: "
                "the per-request path alone, no span recorded or exported",
            ),
        ]

    async def measure(self, ctx: Context, path: str, env: dict[str, str]) -> tuple[list[Sample], bytes]:
        async with self.served(ctx, path, env) as (target, body):
            figures, _ = await loadgen.measure(
                ctx.cfg, target.url, "get", target.args, server_pid=target.server_pid
            )
        return figures, body

    @contextlib.asynccontextmanager
    async def served(
        self, ctx: Context, path: str, env: dict[str, str]
    ) -> AsyncIterator[tuple[loadgen.Target, bytes]]:
        """`keel serve delivery-prefetch`, its first page read (and checked) once."""
        port = free_port()
        argv = [keel_bin(), "serve", "delivery-prefetch", "--port", str(port)]
        async with service(
            argv, {**ctx.service_env(), **env}, ctx.logdir, "keel-serve-delivery", port
        ) as child:
            base = f"http://127.0.0.1:{port}"
            # Any authenticated caller may prefetch: the user wrk sends too (bench/lua/get.lua).
            async with httpx.AsyncClient(base_url=base, headers={"X-User-Id": "bench"}) as http:
                body = (await http.get(path)).raise_for_status().content
            if body.count(b"sig=") < 1:
                raise RuntimeError(f"no signed links in the prefetch answer: {body[:200]!r}")
            yield loadgen.Target(base, [path, "bench"], child.pid), body
