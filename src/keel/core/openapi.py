"""A service's OpenAPI document as YAML, generated from its routes; `api/openapi/` keeps the exported
files (the seeds' "source of truth"), and a test fails when a file and the code disagree."""

from __future__ import annotations

from pathlib import Path

import yaml

from keel.core.service import ServiceSpec
from keel.core.settings import Settings

# File names follow the seeds (`ticket-service.yaml`).
FILE_NAMES = {
    "tickets": "ticket-service.yaml",
    "orders": "order-service.yaml",
    "videos": "video-service.yaml",
    "orchestrator": "orchestrator.yaml",
    "delivery-prefetch": "delivery-prefetch.yaml",
    "story": "story-worker.yaml",
    "tts": "tts-worker.yaml",
    "console": "operator-console.yaml",
}
OPENAPI_DIR = Path("api/openapi")


def render(spec: ServiceSpec) -> str:
    from keel.core.runtime import build_app

    # As `keel serve` would serve it (no embedded-platform extras); the secret only silences the warning.
    settings = Settings(_env_file=None, secret="not-used-for-rendering")  # noqa: S106
    app = build_app([spec], settings, title=spec.title)
    text: str = yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
    return text


def path_for(service: str, root: Path = OPENAPI_DIR) -> Path:
    return root / FILE_NAMES[service]
