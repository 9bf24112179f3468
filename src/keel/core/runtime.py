"""Assemble a process from service specs: one app, one infrastructure, the services' workers and
the outbox relay, all started in the lifespan and stopped cleanly (nothing in flight is lost)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from opentelemetry.sdk.trace.sampling import Sampler

from keel.core.app import create_app
from keel.core.devbus import dev_bus_router
from keel.core.fastpath import FastRoutes
from keel.core.health import SEED_LIVENESS_PATHS, ReadinessCheck, probing
from keel.core.identity import Authenticator, build_authenticator
from keel.core.infra import Infra, open_infra
from keel.core.outbox import OutboxRelay, RelayOptions
from keel.core.retention import InboxRetention
from keel.core.saturation import SaturationSampler, sampling
from keel.core.service import ServiceSpec, Worker
from keel.core.settings import DEFAULT_SECRET, Settings
from keel.core.status import Printer, StatusLine
from keel.core.storage import signed_files_router
from keel.core.supervisor import Supervisor
from keel.core.telemetry import DEFAULT_SAMPLER, KEEP_ALL, make_sampler, setup_tracing, shutdown_tracing

log = logging.getLogger("keel.runtime")


async def start_relay(infra: Infra, stack: AsyncExitStack) -> OutboxRelay:
    # Not started here: the relay starts its producer itself and retries while the broker is away,
    # so a process started during a broker outage serves, and its outbox drains once the broker is back.
    producer = infra.bus.producer()
    stack.push_async_callback(producer.stop)
    return OutboxRelay(
        infra.require_db(), producer, RelayOptions.from_settings(infra.settings), name="outbox-relay"
    )


def _route_templates(routers: Sequence[APIRouter]) -> set[tuple[str, str]]:
    """(method, path template) of the routers' routes (included in the app without a prefix)."""
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    return {(method, r.path) for r in routes for method in r.methods or ()}


def build_app(
    specs: Sequence[ServiceSpec],
    settings: Settings,
    *,
    serve_routes: bool = True,
    run_workers: bool = True,
    embedded: bool = False,
    dev_door: bool = True,
    title: str | None = None,
    status: Printer | None = None,
) -> FastAPI:
    """One FastAPI app for the given services. `serve_routes=False` keeps only health and metrics
    (a `keel worker` process); `run_workers=False` serves HTTP only; `status` prints the live line;
    `dev_door=False` keeps the embedded platform's dev bus door shut (403: keel.core.devbus)."""
    specs = [s.configured() for s in specs]  # each service's settings, read once for this app
    _warn_if_insecure(settings, serve_routes=serve_routes, embedded=embedded)
    names = ", ".join(s.name for s in specs) or "platform"
    topics = sorted({t for s in specs for t in s.topics})
    routers: list[APIRouter] = []
    if serve_routes:
        routers = [r for s in specs for r in s.routers()]
        if any(s.uses_storage for s in specs):
            routers.append(signed_files_router())
        if embedded and topics:
            routers.append(dev_bus_router(topics, door_open=dev_door))
    tracing = setup_tracing(
        f"keel-{names.replace(', ', '-')}",
        settings.otel_exporter_otlp_endpoint,
        sampler=_sampler(settings, embedded),
        client_spans=settings.otel_client_spans,
    )
    process = _Process(
        names=names,
        specs=specs,
        settings=settings,
        topics=topics,
        served=_route_templates(routers),
        authenticator=build_authenticator(settings, embedded=embedded),
        serve_routes=serve_routes,
        run_workers=run_workers,
        embedded=embedded,
        status=status,
        traced=tracing,
    )
    return create_app(
        title=title or f"Keel {names}",
        description=specs[0].description if len(specs) == 1 else "",
        settings=settings,
        routers=routers,
        readiness=process.readiness,
        lifespan=process.lifespan,
        max_route_body_bytes=max((s.max_body_bytes or 0 for s in specs), default=0) or None,
        # One code path: traced or not, the fast routes answer first and make the server span themselves.
        fast_routes=process.fast_routes,
        liveness_aliases=[path for s in specs for path in SEED_LIVENESS_PATHS.get(s.name, ())],
        authenticator=process.authenticator,
    )


def _warn_if_insecure(settings: Settings, *, serve_routes: bool, embedded: bool) -> None:
    """Settings a production process should not start with, each named with its fix (`keel up`, a
    developer's machine, is exempt)."""
    if embedded:
        return
    if settings.secret == DEFAULT_SECRET:
        log.warning(
            "SECRET is the default %r (allowed by KEEL_INSECURE_DEFAULTS): signed links are forgeable; "
            "set SECRET in production",
            DEFAULT_SECRET,
        )
    if serve_routes and settings.auth_mode == "header" and not settings.trusted_proxies:
        log.warning(
            "AUTH_MODE=header with no TRUSTED_PROXIES: X-User-Id is believed from any client and "
            "X-User-Roles from none. Put Keel behind a gateway that sets them and name it in "
            "TRUSTED_PROXIES, or use AUTH_MODE=jwt (docs/security.md)"
        )


@dataclass(kw_only=True, slots=True)
class _Process:
    """What one process runs around serving: its infrastructure, its services' wiring, their workers
    and the outbox relay under one supervisor, all started in the app's lifespan and stopped at its end."""

    names: str  # the services, comma-separated ("platform" for none): for the log lines
    specs: Sequence[ServiceSpec]
    settings: Settings
    topics: Sequence[str]
    served: set[tuple[str, str]]  # (method, path template) of the routes this process serves
    authenticator: Authenticator
    serve_routes: bool
    run_workers: bool
    embedded: bool
    status: Printer | None
    traced: bool
    fast_routes: FastRoutes = field(default_factory=FastRoutes)
    infra: Infra | None = None

    def readiness(self) -> Sequence[ReadinessCheck]:
        return self.infra.checks if self.infra is not None else []

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            infra = await stack.enter_async_context(
                open_infra(
                    self.settings,
                    database=any(s.uses_database for s in self.specs),
                    migrate=migrates_at_start(self.settings, self.embedded),
                    topics=self.topics,
                    broker_required=not self.serve_routes,
                )
            )
            self.infra = app.state.infra = infra
            infra.embedded = self.embedded
            infra.use_authenticator(self.authenticator)
            workers = await self._wire(app, infra, stack)
            await self._expose(app, infra, stack)
            supervisor = app.state.supervisor = Supervisor(workers if self.run_workers else [])
            supervisor.start()
            log.info("keel %s started with %d workers", self.names, len(supervisor.workers))
            try:
                yield
            finally:
                self.fast_routes.clear()  # their use cases close with the lifespan
                await supervisor.stop()
                log.info("keel %s stopped", self.names)
                if self.traced:
                    shutdown_tracing()  # the spans still buffered are exported now

    async def _wire(self, app: FastAPI, infra: Infra, stack: AsyncExitStack) -> list[Worker]:
        """Every service wired on `infra`; the workers this process runs (the supervisor's)."""
        workers: list[Worker] = []
        if self.run_workers and any(s.uses_outbox for s in self.specs):
            relay = await start_relay(infra, stack)
            infra.wake_relay = relay.notify
            workers.append(relay)
        for spec in self.specs:
            wiring = await spec.wire(infra)
            for key, value in wiring.state.items():
                setattr(app.state, key, value)
            for closer in wiring.closers:
                stack.push_async_callback(closer)
            workers.extend(wiring.workers)
            if self.serve_routes:
                self.fast_routes.add(wiring.fast_routes, served=self.served)
        if self.run_workers and any(s.uses_database for s in self.specs):
            workers.append(InboxRetention(infra.require_db(), max_age_s=self.settings.inbox_retention_s))
        if self.status is not None:
            workers.append(StatusLine(self.status))
        return workers

    async def _expose(self, app: FastAPI, infra: Infra, stack: AsyncExitStack) -> None:
        """What the routes, the operator and the metrics read: saturation, the dependencies' state
        (refreshed in the background), the dev bus's producer, the object store."""
        label = "platform" if self.embedded else self.names.replace(", ", "-")
        app.state.saturation = await stack.enter_async_context(
            sampling(
                SaturationSampler(label, app.state.http_metrics.in_flight, db=infra.db, redis=infra.redis)
            )
        )
        await stack.enter_async_context(probing(self.readiness))
        if self.embedded and self.serve_routes:
            app.state.dev_producer = infra.bus.producer()
            await app.state.dev_producer.start()
            stack.push_async_callback(app.state.dev_producer.stop)
        if any(s.uses_storage for s in self.specs):
            app.state.object_store = infra.storage
            app.state.url_signer = infra.signer


def _sampler(settings: Settings, embedded: bool) -> Sampler:
    """OTEL_TRACES_SAMPLER(_ARG) when set; else 10 % parent-based, and every trace under `keel up`
    (a developer's machine, where the one request being looked at must be there)."""
    default = KEEP_ALL if embedded else DEFAULT_SAMPLER
    return make_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg, default=default)


def migrates_at_start(settings: Settings, embedded: bool) -> bool:
    """MIGRATE_ON_START when set; else `keel up`, and any process whose PostgreSQL is the embedded one
    (no release step ever migrates that database), migrate at start. Everything else was migrated by
    `keel migrate`, run once per release before the services start (README)."""
    if settings.migrate_on_start is not None:
        return settings.migrate_on_start
    return embedded or not settings.postgres_dsn
