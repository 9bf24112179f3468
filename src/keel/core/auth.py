"""The caller's user id as a route parameter (`user: CurrentUser`): the user of `keel.core.identity`'s
resolver, whichever AUTH_MODE it runs in. Routes that need roles take `Authenticated` or a
`RequireRole` from there."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from keel.core.identity import MAX_USER_ID_LENGTH, Authenticated, _user_header

__all__ = ["MAX_USER_ID_LENGTH", "CurrentUser", "_user_header", "current_user"]


async def current_user(identity: Authenticated) -> str:
    return identity.user


CurrentUser = Annotated[str, Depends(current_user)]
