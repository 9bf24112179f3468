"""The whole cityguide flow on the real broker, PostgreSQL and Redis: orchestrator, story, TTS and
delivery prefetch wired by build_app in one process, talking only through Kafka topics.

route.confirmed → workflow completed → prefetch links → real speech through the CDN verifier; an
injected TTS failure → tts_batch failed → restart → completed with attempts 2; every consumed event
delivered again (same id, and again without headers) changes nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio

from keel.cityguide import topics
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.spec import SPEC as TTS
from keel.core.bus import Message, OutgoingMessage
from keel.core.bus.kafka import KafkaBus
from keel.core.events import Event, encode
from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.core.signing import UrlSigner
from tests.integration.cityguide.support import published_for
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers
from tests.support.topic_log import KafkaTopicLog

SECRET = "e2e-signing-secret"
CALLER = {"X-User-Id": "cityguide-e2e"}
FLOW_TIMEOUT_S = 120
POINTS = [{"name": "Кремль"}, {"name": "Улица Баумана"}, {"name": "Озеро Кабан"}, {"name": "Набережная"}]


class Flow:
    def __init__(self, client: httpx.AsyncClient, brokers: list[str], dsn: str, failing_route: str) -> None:
        self.client, self.brokers, self.dsn, self.failing_route = client, brokers, dsn, failing_route

    async def publish(self, topic: str, key: str, payload: dict[str, Any], *, headers: bool = True) -> None:
        await self.send([self.message(topic, key, payload, headers=headers)])

    def message(
        self, topic: str, key: str, payload: dict[str, Any], *, headers: bool = True
    ) -> OutgoingMessage:
        if headers:
            return encode(Event(topic, payload, key=key), topic, "bare")
        return OutgoingMessage(topic, orjson.dumps(payload), key=key.encode())

    async def send(self, messages: list[OutgoingMessage]) -> None:
        bus = KafkaBus(self.brokers, idempotence=idempotent_producers())
        producer = bus.producer()
        await producer.start()
        try:
            await producer.send_many(messages)
        finally:
            await producer.stop()
            await bus.close()

    async def workflow(self, route_id: str) -> httpx.Response:
        return await self.client.get(f"/workflows/{route_id}")

    async def until_status(self, route_id: str, status: str) -> dict[str, Any]:
        response = await eventually(
            lambda: self.workflow(route_id),
            until=lambda r: r.status_code == 200 and r.json()["status"] == status,
            timeout_s=FLOW_TIMEOUT_S,
            what=f"workflow {route_id} {status}",
        )
        return dict(response.json())

    async def prefetch(self, route_id: str, count: int, **params: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            "/delivery/prefetch", params={"route_id": route_id, "next": count, **params}
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def sql(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def emitted(self, route_id: str) -> int:
        """How many events the orchestrator published for `route_id` (each once), once none waits."""
        return len(await published_for(self.dsn, self.brokers, route_id, timeout_s=FLOW_TIMEOUT_S))

    async def collect(self, topic: str, route_id: str, count: int) -> list[Message]:
        """The first `count` records of `topic` that belong to `route_id`."""
        log = await KafkaTopicLog(self.brokers, topic).open()
        found: list[Message] = []
        deadline = time.monotonic() + FLOW_TIMEOUT_S
        try:
            while len(found) < count:
                [message] = await log.read(1, within_s=max(deadline - time.monotonic(), 0.1))
                if orjson.loads(message.value).get("route_id") == route_id:
                    found.append(message)
        finally:
            await log.close()
        return found


@pytest_asyncio.fixture(scope="module")
async def flow(pg_dsn, redis_url, kafka_brokers, tmp_path_factory, app_database) -> AsyncIterator[Flow]:
    failing_route = f"fail-{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path_factory.mktemp("cityguide-e2e"),
            **app_database(pg_dsn),
            "redis_url": redis_url,
            "kafka_brokers": kafka_brokers,
            "kafka_idempotence": idempotent_producers(),
            "secret": SECRET,
            "consumer_max_attempts": 3,
            # The in-process client stands for the gateway that sets X-User-Roles.
            "trusted_proxies": "127.0.0.1/32",
        }
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TTS_FAIL_STORIES", f"{failing_route}-s2")
        # A module's app, built before the conftest's per-test `unlimited_workflow_reads` applies: these
        # tests poll workflows as fast as they answer, so the read limit is lifted here too.
        env.setenv("WORKFLOW_READ_LIMIT", "")
        env.setenv("WORKFLOW_READ_ADDRESS_LIMIT", "")
        app = build_app([ORCHESTRATOR, DELIVERY, STORY, TTS], settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://cityguide", headers=CALLER
            ) as client,
        ):
            yield Flow(client, kafka_brokers, pg_dsn, failing_route)


def _route(route_id: str) -> dict[str, Any]:
    return {"route_id": route_id, "mode": "walk", "city": "Казань", "points": POINTS}


async def test_a_confirmed_route_ends_in_signed_links_to_real_speech(flow: Flow):
    route_id = f"route-{uuid.uuid4().hex[:8]}"
    await flow.publish(
        topics.ROUTE_CONFIRMED, route_id, _route(route_id), headers=False
    )  # an outside producer

    view = await flow.until_status(route_id, "completed")
    assert [(s["name"], s["status"], s["attempts"]) for s in view["steps"]] == [
        ("story_generate", "completed", 1),
        ("tts_batch", "completed", 1),
        ("delivery", "completed", 1),
    ]
    assert [j["title"] for j in view["jobs"]] == [p["name"] for p in POINTS]
    # Delivery consumes tts.completed in its own group: the route can be completed before the last
    # audio is in its list, and three of four in the list need not be the first three.
    await eventually(
        lambda: flow.prefetch(route_id, 50),
        until=lambda got: len(got) == len(POINTS),
        timeout_s=30,
        what="every audio listed",
    )
    items = await flow.prefetch(route_id, 3)
    assert [i["audio_id"] for i in items] == [j["audio_id"] for j in view["jobs"][:3]]
    for item in items:
        audio = await flow.client.get(item["url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"
        assert len(audio.content) > 22_050  # over half a second of 16-bit speech
        assert item["ttl"] == 3600

    rest = await flow.prefetch(route_id, 50, after=items[-1]["audio_id"])
    assert [i["audio_id"] for i in rest] == [view["jobs"][3]["audio_id"]]

    sig = items[0]["url"].split("sig=")[1][:8]
    forged = await flow.client.get(items[0]["url"].replace(f"sig={sig}", f"sig={sig[::-1]}"))
    old = UrlSigner(SECRET, clock=lambda: time.time() - 7200).sign(f"/cdn/audio/{items[0]['audio_id']}", 3600)
    expired = await flow.client.get(old.url())
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden"
    assert expired.status_code == 410 and expired.json()["error"]["code"] == "gone"


async def test_a_failed_tts_job_fails_the_batch_and_a_restart_completes_it_with_attempts_2(flow: Flow):
    route_id = flow.failing_route
    await flow.publish(topics.ROUTE_CONFIRMED, route_id, _route(route_id))

    failed = await flow.until_status(route_id, "failed")
    batch = next(s for s in failed["steps"] if s["name"] == "tts_batch")
    assert batch["status"] == "failed" and f"{route_id}-s2" in batch["error"]
    assert "injected failure" in batch["error"]

    restart = await flow.client.post(
        f"/workflows/{route_id}/restart?step=tts_batch",
        headers={"X-User-Id": "ops-e2e", "X-User-Roles": "operator"},
        json={"reason": "retry"},
    )
    assert restart.status_code == 202

    done = await flow.until_status(route_id, "completed")
    batch = next(s for s in done["steps"] if s["name"] == "tts_batch")
    assert (batch["status"], batch["attempts"], batch["error"]) == ("completed", 2, None)
    assert [r["requested_by"] for r in done["restarts"]] == ["ops-e2e"]
    assert {j["status"] for j in done["jobs"]} == {"completed"}
    links = await eventually(
        lambda: flow.prefetch(route_id, 50),
        until=lambda got: len(got) == len(POINTS),
        timeout_s=30,
        what="links",
    )
    assert [i["audio_id"] for i in links] == [j["audio_id"] for j in done["jobs"]]


async def test_every_event_delivered_twice_changes_nothing(flow: Flow):
    route_id = f"dup-{uuid.uuid4().hex[:8]}"
    n = len(POINTS)
    await flow.publish(topics.ROUTE_CONFIRMED, route_id, _route(route_id))
    await flow.until_status(route_id, "completed")
    before = (await flow.workflow(route_id)).json()
    ready = await eventually(
        lambda: flow.prefetch(route_id, 50), until=lambda got: len(got) == n, timeout_s=30, what="links"
    )
    emitted_before = await flow.emitted(route_id)

    consumed = {
        topics.ROUTE_CONFIRMED: 1,
        topics.STORY_GENERATE: 1,
        topics.STORY_GENERATED: 1,
        topics.TTS_REQUESTED: n,
        topics.TTS_COMPLETED: n,
    }
    originals = {topic: await flow.collect(topic, route_id, count) for topic, count in consumed.items()}
    again: list[OutgoingMessage] = []
    for topic, messages in originals.items():
        for m in messages:
            again.append(OutgoingMessage(topic, m.value, key=m.key, headers=m.headers))  # same event id
            again.append(OutgoingMessage(topic, m.value, key=m.key))  # and as an outside producer would
    await flow.send(again)

    # The workers answer the repeated requests again: wait until those answers are on their topics...
    await flow.collect(topics.STORY_GENERATED, route_id, 1 + 2 + 2)
    await flow.collect(topics.TTS_COMPLETED, route_id, n + 2 * n + 2 * n)
    # ...then put a marker behind everything on each consumed partition and wait for its effect.
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    audio_keys = [m.key.decode() for m in originals[topics.TTS_COMPLETED]]
    await flow.send(
        [
            flow.message(topics.ROUTE_CONFIRMED, route_id, {"route_id": f"{marker}-rc", "mode": "walk"}),
            flow.message(
                topics.STORY_GENERATED,
                route_id,
                {"route_id": f"{marker}-sg", "lang": "ru", "stories": [{"story_id": "x", "text": "Текст."}]},
            ),
            *[
                flow.message(
                    topics.TTS_COMPLETED,
                    key,
                    # No payload audio_id: the record key is the audio id (seed 000), and the
                    # original keys put the markers on the partitions that were consumed.
                    {"route_id": f"{marker}-tts", "story_id": f"x{i}", "status": "completed", "position": i},
                )
                for i, key in enumerate(audio_keys)
            ],
        ]
    )
    await eventually(
        lambda: flow.workflow(f"{marker}-rc"), until=lambda r: r.status_code == 200, timeout_s=60
    )
    parked = "SELECT count(*) FROM cityguide_parked_events WHERE route_id = $1"
    await eventually(lambda: flow.sql(parked, f"{marker}-sg"), until=lambda c: c == 1, timeout_s=60)
    await eventually(lambda: flow.sql(parked, f"{marker}-tts"), until=lambda c: c == n, timeout_s=60)
    await eventually(
        lambda: flow.prefetch(f"{marker}-tts", 50), until=lambda got: len(got) == n, timeout_s=60
    )

    assert (await flow.workflow(route_id)).json() == before
    after_ready = await flow.prefetch(route_id, 50)
    assert [i["audio_id"] for i in after_ready] == [i["audio_id"] for i in ready]
    emitted_after = await flow.emitted(route_id)
    assert (
        emitted_after == emitted_before == 1 + n + 1
    )  # story.generate, tts.requested x n, delivery.prefetch
