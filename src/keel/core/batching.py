"""Group commit: concurrent callers' writes go to the database together, one statement per batch.

A caller `submit`s its item and awaits its own result. Items submitted in the same turn of the event
loop, and every item that arrives while `max_in_flight` batches are already running, are taken
together as the next batch (at most `max_batch`). There is no timer: an idle service sends a lone
item at once, and under load the batches grow by themselves with the time a batch takes. One
statement per batch means one round trip and one commit (one WAL flush) for all of it.

`run` gets the items and returns one result per item, in order; if it raises, every caller of that
batch gets the exception. A caller cancelled before its batch is sent is left out of it; one
cancelled while its batch runs does not stop the batch (its item may be written, as a statement
sent before a cancellation may commit: callers' idempotency covers it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram

T = TypeVar("T")
R = TypeVar("R")

BATCH_SIZES = Histogram(
    "group_commit_batch_size",
    "Items written together in one statement",
    ["batch"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 64,
        max_in_flight: int = 2,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sizes = BATCH_SIZES.labels(name)

    @property
    def waiting(self) -> int:
        """Items submitted and not yet in a batch."""
        return len(self._pending)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, result))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # the rest of this turn's submissions join the batch
        return await result

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = [entry for entry in self._pending[: self._max_batch] if not entry[1].done()]
            del self._pending[: self._max_batch]
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._sizes.observe(len(batch))
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} returned {len(results)} results")
        except Exception as exc:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
        except BaseException:  # cancelled (the service is stopping): so are its callers
            for _, waiter in batch:
                waiter.cancel()
            raise
        else:
            for (_, waiter), result in zip(batch, results, strict=True):
                if not waiter.done():
                    waiter.set_result(result)
        finally:
            self._in_flight -= 1
            self._flush()
