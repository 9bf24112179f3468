"""Ids as headers, logs and OTLP write them: 128 bits as 32 hex digits, 64 bits as 16.

`int.to_bytes(...).hex()` runs in C at once; `format(n, "032x")` and its f-string form parse the
format spec on every call, at several times the cost, and these run on every request (the request
id, the access line's trace ids)."""

from __future__ import annotations


def hex128(value: int) -> str:
    return value.to_bytes(16, "big").hex()


def hex64(value: int) -> str:
    return value.to_bytes(8, "big").hex()
