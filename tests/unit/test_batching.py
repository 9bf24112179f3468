"""Group commit (keel.core.batching): concurrent submissions share batches, each caller gets its own
result, a failed batch fails its callers only, a caller cancelled before its batch leaves it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from keel.core.batching import GroupCommit
from tests.support.eventually import eventually


class Store:
    """A batch writer that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on: int | None = None

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_on in items:
            raise ConnectionError("the database went away")
        return [item * 10 for item in items]


async def test_a_lone_item_goes_at_once_and_concurrent_ones_share_batches() -> None:
    store = Store()
    commits = GroupCommit("t", store.write, max_batch=8, max_in_flight=1)
    assert await commits.submit(1) == 10
    assert store.batches == [[1]]

    store.gate.clear()
    first = asyncio.create_task(commits.submit(2))
    await eventually(lambda: len(store.batches), until=lambda n: n == 2, timeout_s=5, what="[2] sent")
    rest = [asyncio.create_task(commits.submit(n)) for n in range(3, 23)]
    await eventually(lambda: commits.waiting, until=lambda n: n == 20, timeout_s=5, what="20 waiting")
    store.gate.set()
    assert await asyncio.gather(first, *rest) == [n * 10 for n in range(2, 23)]
    # While [2] ran, the other 20 waited, then went in batches of at most 8, in order.
    assert store.batches[1:] == [[2], list(range(3, 11)), list(range(11, 19)), list(range(19, 23))]


async def test_a_failed_batch_fails_its_own_callers_only() -> None:
    store = Store()
    commits = GroupCommit("t", store.write, max_batch=2, max_in_flight=1)
    store.fail_on = 2
    outcomes = await asyncio.gather(*(commits.submit(n) for n in (1, 2, 3, 4)), return_exceptions=True)
    assert store.batches == [[1, 2], [3, 4]]
    assert [type(o) for o in outcomes[:2]] == [ConnectionError, ConnectionError]
    assert outcomes[2:] == [30, 40]


async def test_a_caller_cancelled_before_its_batch_is_left_out() -> None:
    store = Store()
    store.gate.clear()
    commits = GroupCommit("t", store.write, max_batch=8, max_in_flight=1)
    running = asyncio.create_task(commits.submit(1))
    await eventually(lambda: store.batches, until=lambda b: b == [[1]], timeout_s=5, what="[1] sent")
    waiting = [asyncio.create_task(commits.submit(n)) for n in (2, 3)]
    await eventually(lambda: commits.waiting, until=lambda n: n == 2, timeout_s=5, what="2 waiting")
    waiting[0].cancel()
    store.gate.set()
    assert await running == 10 and await waiting[1] == 30
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    assert store.batches == [[1], [3]]
