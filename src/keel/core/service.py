"""How a service plugs into the platform: its routers, its topics, and a wiring function that builds
its use cases from the infrastructure and returns the background workers it needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import APIRouter

if TYPE_CHECKING:
    from keel.core.fastpath import Fast
    from keel.core.infra import Infra


class Worker(Protocol):
    """A long-running background loop (outbox relay, consumer): `run()` until `stop()`."""

    name: str

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Wiring:
    """What a service's wiring produced: objects routes need (put on `app.state`) and workers to run."""

    state: dict[str, Any] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    # Called on shutdown after the workers stopped (close clients the service opened itself).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Hot routes answered ahead of the FastAPI stack (keel.core.fastpath).
    fast_routes: list[Fast] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    title: str
    routers: Callable[[], Sequence[APIRouter]]
    wire: Callable[[Infra], Awaitable[Wiring]]
    # Topics this service publishes or consumes; created at start when missing.
    topics: Sequence[str] = ()
    uses_outbox: bool = False
    uses_database: bool = True
    # Stores objects in the local store: the platform then serves its signed `/files` route.
    uses_storage: bool = False
    description: str = ""
    # The largest request body any of its routes accepts (uploads), if above the default.
    max_body_bytes: int | None = None
    # Reads the service's own settings and returns the spec built on them. Called once when a process
    # is assembled from the spec (`configured()`), never at import: the settings are read once and
    # handed in, and a test that sets the environment first sees its values.
    configure: Callable[[], ServiceSpec] | None = None

    def configured(self) -> ServiceSpec:
        return self if self.configure is None else self.configure()

    @classmethod
    def deferred(cls, name: str, title: str, configure: Callable[[], ServiceSpec]) -> ServiceSpec:
        """A spec that is only a name until `configured()` builds it on its settings."""

        def routers() -> Sequence[APIRouter]:
            raise RuntimeError(f"service {name!r}: use spec.configured()")

        async def wire(infra: Infra) -> Wiring:
            raise RuntimeError(f"service {name!r}: use spec.configured()")

        return cls(name=name, title=title, routers=routers, wire=wire, configure=configure)
