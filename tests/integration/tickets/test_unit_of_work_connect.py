"""A unit of work whose connection cannot be opened fails with the connect's own error — which the edge
answers 503 — and not with a RuntimeError from releasing a connection it never held (seen as a 500
on a GET while PostgreSQL was unreachable)."""

from __future__ import annotations

import functools
import socket

import pytest

from keel.core.batching import GroupCommit
from keel.core.db import Database
from keel.core.transient import is_transient
from keel.tickets.repository import create_many
from keel.tickets.unit_of_work import PgTicketUnitOfWork


def _closed_port() -> int:
    """A loopback port nothing listens on: a connect there is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_connection_that_cannot_open_fails_the_unit_of_work_with_the_connect_error():
    db = Database.connect(f"postgresql://postgres@127.0.0.1:{_closed_port()}/keel", connect_timeout_s=1.0)
    creates = GroupCommit("ticket-creates", functools.partial(create_many, db))
    try:
        with pytest.raises(Exception) as failed:  # the driver names the type; checked below
            async with PgTicketUnitOfWork(db, outbox_shards=1, wake=lambda: None, creates=creates) as uow:
                await uow.tickets.get("00000000-0000-4000-8000-000000000000")
        assert not isinstance(failed.value, RuntimeError), failed.value
        assert is_transient(failed.value), repr(failed.value)
    finally:
        await db.dispose()
