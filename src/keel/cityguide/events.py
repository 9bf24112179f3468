"""Reading cityguide payloads: a missing or mistyped field is a poison message (to the DLQ), never a crash."""

from __future__ import annotations

from typing import Any

from keel.core.events import PoisonMessage


def text_field(payload: dict[str, Any], name: str, *, max_len: int = 200) -> str:
    """A required non-empty string; numbers (an outside producer's int ids) are accepted as text."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PoisonMessage(f"{name} must be a non-empty string, got {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > max_len:
        raise PoisonMessage(f"{name} must be 1..{max_len} characters")
    return text


def optional_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoisonMessage(f"{name} must be an integer")
    return value


def optional_float(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PoisonMessage(f"{name} must be a number")
    return float(value)
