"""The simplified identity of the seeds: an `X-User-Id` header, required on business routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader

from keel.core.errors import Unauthorized

MAX_USER_ID_LENGTH = 128

# Declared as an API-key scheme so the OpenAPI document (and schemathesis) knows the header is required.
_user_header = APIKeyHeader(name="X-User-Id", auto_error=False, description="Caller's user id")


async def current_user(value: Annotated[str | None, Depends(_user_header)]) -> str:
    user = (value or "").strip()
    if not user:
        raise Unauthorized("X-User-Id header is required")
    if len(user) > MAX_USER_ID_LENGTH or not user.isprintable():
        raise Unauthorized(f"X-User-Id must be 1..{MAX_USER_ID_LENGTH} printable characters")
    return user


CurrentUser = Annotated[str, Depends(current_user)]
