"""A page shipped in a package: its files read once at start, served with `Cache-Control: no-cache`;
nothing but the named files is reachable (no directory walk, no CDN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from keel.core.errors import NotFound


def page_router(
    package: str, files: Mapping[str, str], *, prefix: str = "", dependencies: Sequence[Any] = ()
) -> APIRouter:
    """`GET {prefix}/` answers `index.html`, `GET {prefix}/static/{name}` the others; `files` maps each
    file under `<package>/web` to its media type."""
    web = resources.files(package) / "web"
    content = {name: (web / name).read_bytes() for name in files}
    router = APIRouter(prefix=prefix, tags=["page"], include_in_schema=False, dependencies=list(dependencies))
    no_cache = {"Cache-Control": "no-cache"}

    @router.get("/")
    async def index() -> Response:
        return Response(content["index.html"], media_type=files["index.html"], headers=no_cache)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in content:
            raise NotFound(f"no static file {name!r}")
        return Response(content[name], media_type=files[name], headers=no_cache)

    return router
