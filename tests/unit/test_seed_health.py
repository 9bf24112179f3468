"""Seed 003 checks the videos service at `/health`: it answers exactly as `/healthz` there (and under
`keel up`, which serves videos), and nowhere else."""

from __future__ import annotations

import httpx

from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.tickets.spec import SPEC as TICKETS
from keel.videos.spec import build_spec


async def _get(specs, path: str) -> httpx.Response:
    # No lifespan: the liveness routes do no I/O.
    app = build_app(specs, Settings(_env_file=None, secret="test-only-secret"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://keel") as client:
        return await client.get(path)


async def test_the_videos_service_answers_health_as_healthz():
    health, healthz = await _get([build_spec()], "/health"), await _get([build_spec()], "/healthz")
    assert health.status_code == healthz.status_code == 200
    assert health.json() == healthz.json() == {"status": "ok"}


async def test_other_services_keep_to_healthz():
    assert (await _get([TICKETS], "/health")).status_code == 404
    assert (await _get([TICKETS, build_spec()], "/health")).status_code == 200  # keel up serves videos
