"""The registry of Keel's services: name → the module that exposes its `SPEC`. Imported lazily so a
process loads only the services it runs."""

from __future__ import annotations

import importlib

from keel.core.service import ServiceSpec

# Every name the CLI accepts (DESIGN.md); a name maps to a module once its service has landed.
NAMES = ("tickets", "orders", "videos", "orchestrator", "delivery-prefetch", "story", "tts", "console")
MODULES: dict[str, str] = {
    "tickets": "keel.tickets.spec",
    "orders": "keel.orders.spec",
    "orchestrator": "keel.cityguide.orchestrator.spec",
    "videos": "keel.videos.spec",
    "delivery-prefetch": "keel.cityguide.delivery.spec",
    "story": "keel.cityguide.story.spec",
    "tts": "keel.cityguide.tts.spec",
    "console": "keel.ops.spec",
}


class UnknownService(LookupError):
    pass


def available() -> list[str]:
    return [n for n in NAMES if n in MODULES]


def load(name: str) -> ServiceSpec:
    if name not in NAMES:
        raise UnknownService(f"unknown service {name!r}; choose one of: {', '.join(NAMES)}")
    if name not in MODULES:
        raise UnknownService(
            f"service {name!r} is not part of this build yet; available: {', '.join(available()) or 'none'}"
        )
    spec = importlib.import_module(MODULES[name]).SPEC
    assert isinstance(spec, ServiceSpec)
    return spec.configured()  # the service's settings, read here once for the process


def load_all() -> list[ServiceSpec]:
    return [load(n) for n in available()]
