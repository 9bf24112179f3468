"""Commands packed with hiredis are the bytes redis-py's own asyncio packing makes, and what hiredis
does not take is packed, or refused, the library's way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from keel.core import redis_packing

ARGUMENTS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary().map(memoryview),
    st.binary().map(bytearray),
)
NAMES = st.sampled_from(["SET", b"GET", "EVAL", "CONFIG GET", b"CLIENT SETNAME", "hset"])


def python_packed(*args: Any) -> bytes:
    return b"".join(redis_packing._python_pack(Connection(), *args))


def hiredis_packed(*args: Any, **connection: Any) -> bytes:
    return b"".join(redis_packing.pack_command(Connection(**connection), *args))


@given(NAMES, st.lists(ARGUMENTS, max_size=8))
def test_the_bytes_are_the_librarys_for_any_command(name: Any, arguments: list[Any]) -> None:
    assert hiredis_packed(name, *arguments) == python_packed(name, *arguments)


def test_plain_commands_never_reach_the_python_packer(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = [("SET", "k", "v", "PX", 1000, "NX"), (b"EVALSHA", b"f" * 40, 1, "k", 2.5), ("GET", "ключ")]
    expected = [python_packed(*command) for command in commands]

    def python_pack(*_: Any) -> list[bytes]:
        raise AssertionError("packed in Python")

    monkeypatch.setattr(redis_packing, "_python_pack", python_pack)
    assert [hiredis_packed(*command) for command in commands] == expected


def test_a_command_name_with_its_arguments_in_it_is_split_as_the_library_splits_it() -> None:
    assert hiredis_packed("CONFIG GET", "maxmemory") == python_packed("CONFIG", "GET", "maxmemory")
    assert hiredis_packed(b"CONFIG GET", "maxmemory").startswith(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n")


@pytest.mark.parametrize("value", [True, None, object(), 1 + 2j])
def test_what_redis_cannot_take_is_refused_with_the_librarys_error(value: Any) -> None:
    with pytest.raises(DataError, match="Invalid input of type"):
        hiredis_packed("SET", "k", value)


def test_a_string_that_is_not_unicode_text_raises_as_the_library_raises() -> None:
    with pytest.raises(UnicodeEncodeError):
        hiredis_packed("SET", "k", "\ud800")


def test_another_encoding_is_the_librarys_own() -> None:
    latin = Connection(encoding="latin-1")
    assert b"".join(redis_packing.pack_command(latin, "SET", "k", "é")).endswith(b"\r\n\xe9\r\n")


def test_keels_clients_pack_with_hiredis() -> None:
    from keel.core.redis_topology import RedisTopology  # installs it

    client = RedisTopology.parse("redis://127.0.0.1:1/0").client()
    connection = client.connection_pool.make_connection()
    assert connection.pack_command("SET", "k", "v") == [b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"]
    assert type(connection).pack_command is redis_packing.pack_command
