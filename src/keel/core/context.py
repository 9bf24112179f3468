"""Per-request context (request id) readable anywhere in the call chain without passing it along."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

from keel.core.hexids import hex128

_request_id: ContextVar[str | None] = ContextVar("keel_request_id", default=None)
# Client-supplied ids are echoed into headers and logs: keep them short and inert.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    # 128 random bits as 32 hex characters. An id correlates logs, it guards nothing: the module's
    # generator (reseeded in a forked child) costs a tenth of an os.urandom system call per request.
    return hex128(random.getrandbits(128))


def accept_request_id(candidate: str | None) -> str:
    """The client's id when it is safe to echo, else a fresh one."""
    if candidate and _SAFE_ID.match(candidate):
        return candidate
    return new_request_id()


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> object:
    return _request_id.set(value)


def reset_request_id(token: object) -> None:
    _request_id.reset(token)  # type: ignore[arg-type]
