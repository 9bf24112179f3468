"""The dead-letter operations a command runs, against Kafka directly or a platform's `/ops` API.

`keel up` keeps its bus in memory, inside its own process: only its operator API reaches it, so
`--base-url` sends each operation there instead. Both answer with the same JSON shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import httpx

from keel.core.settings import Settings
from keel.ops.dlq import DeadLetterOps, Progress
from keel.ops.records import Selection


class DeadLetterSession(Protocol):
    async def summaries(self) -> list[dict[str, Any]]: ...

    async def show(self, record: str) -> dict[str, Any]: ...

    async def replay(
        self, topic: str, selection: Selection, payload: bytes | None, progress: Progress | None
    ) -> dict[str, Any]: ...

    async def purge(self, topic: str, selection: Selection, delete: bool) -> dict[str, Any]: ...

    async def count(self, topic: str, selection: Selection) -> int:
        """How many pending records `selection` takes (what a purge asks to confirm)."""


class OpsRefused(RuntimeError):
    """The operator API answered with an error envelope."""


class LocalSession:
    def __init__(self, ops: DeadLetterOps, actor: str) -> None:
        self._ops = ops
        self._actor = actor

    async def summaries(self) -> list[dict[str, Any]]:
        return await self._ops.summaries()

    async def show(self, record: str) -> dict[str, Any]:
        return await self._ops.show(record)

    async def replay(
        self, topic: str, selection: Selection, payload: bytes | None, progress: Progress | None
    ) -> dict[str, Any]:
        outcome = await self._ops.replay(
            topic, selection, actor=self._actor, payload=payload, progress=progress
        )
        return outcome.view()

    async def purge(self, topic: str, selection: Selection, delete: bool) -> dict[str, Any]:
        return (await self._ops.purge(topic, selection, actor=self._actor, delete=delete)).view()

    async def count(self, topic: str, selection: Selection) -> int:
        return len(await self._ops.records(topic, selection, limit=1_000_000))


class RemoteSession:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self._client.request(method, path, json=body)
        if response.is_error:
            try:
                error = response.json()["error"]
                raise OpsRefused(f"{response.status_code} {error['code']}: {error['message']}")
            except (ValueError, KeyError, TypeError):
                raise OpsRefused(f"{response.status_code}: {response.text[:200]}") from None
        return response.json()

    async def summaries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/ops/dlq")
        return result

    async def show(self, record: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/ops/dlq/records/{record}")
        return result

    async def replay(
        self, topic: str, selection: Selection, payload: bytes | None, progress: Progress | None
    ) -> dict[str, Any]:
        body = _body(selection)
        if payload is not None:
            body["payload"] = payload.decode()
        result: dict[str, Any] = await self._call("POST", f"/ops/dlq/{topic}/replay", body)
        return result

    async def purge(self, topic: str, selection: Selection, delete: bool) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/ops/dlq/{topic}/purge", {**_body(selection), "delete": delete}
        )
        return result

    async def count(self, topic: str, selection: Selection) -> int:
        params = {k: v for k, v in _body(selection).items() if v is not None and k != "ids"}
        response = await self._client.get(f"/ops/dlq/{topic}/records", params={**params, "limit": 1_000_000})
        records = [
            r for r in response.raise_for_status().json() if selection.ids is None or r["id"] in selection.ids
        ]
        return len(records)


def _body(selection: Selection) -> dict[str, Any]:
    described = selection.describe()
    return {**described, "all": not any(v is not None for v in described.values())}


@asynccontextmanager
async def open_session(
    base_url: str | None, actor: str, settings: Settings
) -> AsyncIterator[DeadLetterSession]:
    if base_url:
        async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=120) as client:
            yield RemoteSession(client)
        return
    from keel.core.bus.factory import build_bus
    from keel.core.db import Database
    from keel.core.infra import reach_postgres, resolve_dsn
    from keel.ops.audit import Audit
    from keel.ops.catalog import dead_letter_topics
    from keel.ops.topics import topic_admin

    if not settings.kafka_brokers:
        raise OpsRefused(
            "no KAFKA_BROKERS: set it, or pass --base-url of a running platform (`keel up` keeps its bus in memory)"
        )
    async with AsyncExitStack() as stack:
        dsn = await resolve_dsn(settings)
        await reach_postgres(dsn, settings.db_connect_timeout_s)
        db = Database.connect(
            dsn, pool_size=2, connect_timeout_s=settings.db_connect_timeout_s, pooler=settings.db_pooler
        )
        stack.push_async_callback(db.dispose)
        bus = build_bus(settings)
        stack.push_async_callback(bus.close)
        admin = topic_admin(bus)
        stack.push_async_callback(admin.close)
        producer = bus.producer()
        await producer.start()
        stack.push_async_callback(producer.stop)
        yield LocalSession(DeadLetterOps(admin, producer, dead_letter_topics(), Audit(db)), actor)
