"""Typed FastAPI dependencies for what a service's wiring built at start-up (`Wiring.state`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from starlette.requests import Request

T = TypeVar("T")


def wired(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """The dependency that hands a route the object its service's wiring put under `name`: one per app,
    built in the lifespan after the routes, so it is found on the app rather than imported. An `async`
    function: a plain `def` dependency would cost a thread-pool hop per request."""

    async def dependency(request: Request) -> T:
        return cast(T, getattr(request.app.state, name))

    dependency.__name__ = f"wired_{name}"
    dependency.__qualname__ = f"wired_{name}"
    return dependency
