"""Redis commands packed by hiredis (C) on redis-py's asyncio connections, as redis-py's own sync
connections pack them whenever hiredis is installed.

redis-py's asyncio connections build every command's bytes in Python, argument by argument, even
with hiredis installed (redis/redis-py#4176; the fix, #4191, is not in a release yet): a
measurable share of every request's Redis work on the client (docs/design-decisions.md, with the
figure). `install()` gives the asyncio connections the sync side's packing: the same bytes
(tests/unit/test_redis_packing.py holds them equal), and whatever hiredis does not take (a
bytearray, a bool, None, another encoding than UTF-8) goes the library's own way, its errors
included. One difference, the sync client's too: a command is one buffer with its values copied
in, where the Python packer sends a large value as a buffer of its own. Remove this module once
redis-py packs asyncio commands itself.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection

_python_pack = AbstractConnection.pack_command


def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
    """`AbstractConnection.pack_command` with hiredis: one buffer per command."""
    encoder = self.encoder
    if encoder.encoding == "utf-8" and encoder.encoding_errors == "strict" and _whole(args):
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, UnicodeError):
            pass  # not hiredis's: the library packs it or raises its DataError
    packed: list[bytes] = _python_pack(self, *args)
    return packed


def _whole(args: tuple[Any, ...]) -> bool:
    """Whether the command name is one word: one with arguments in it ("CONFIG GET") is split the
    library's way."""
    if not args:
        return False
    first = args[0]
    if isinstance(first, str):
        return " " not in first
    return isinstance(first, bytes) and b" " not in first


def install() -> None:
    """Every asyncio connection of this process packs with hiredis (idempotent)."""
    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
