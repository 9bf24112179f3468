"""The story and TTS workers in the real app on the memory bus: requests in, results out, audio stored."""

from __future__ import annotations

import io
import uuid
import wave

import orjson
import pytest

from keel.cityguide import topics
from keel.cityguide.audio import audio_key
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.spec import SPEC as TTS
from keel.core.bus import OutgoingMessage
from keel.core.events import Event, encode
from tests.integration.cityguide.conftest import serving
from tests.support.topic_log import open_topic_log


@pytest.fixture
def route_id() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


async def _send(app, topic: str, key: str, payload: dict, *, raw: bool = False) -> None:
    producer = app.state.infra.bus.producer()
    await producer.start()
    message = (
        OutgoingMessage(topic, orjson.dumps(payload), key=key.encode())
        if raw
        else encode(Event(topic, payload, key=key), topic, "bare")
    )
    await producer.send(message)
    await producer.stop()


def _request(
    route_id: str, story: str = "s1", attempt: int = 1, text: str = "Перед вами старый мост."
) -> dict:
    return {
        "route_id": route_id,
        "story_id": f"{route_id}-{story}",
        "text": text,
        "lang": "ru",
        "position": 0,
        "attempt": attempt,
    }


async def test_story_generate_becomes_three_to_five_stories_keyed_by_route(make_settings, route_id):
    async with serving([STORY], make_settings(), embedded=True) as (app, _):
        out = await open_topic_log(app.state.infra.bus, topics.STORY_GENERATED)
        route = {"route_id": route_id, "mode": "walk", "points": [{"name": "Кремль"}]}
        await _send(
            app, topics.STORY_GENERATE, route_id, {"route_id": route_id, "lang": "ru", "route": route}
        )
        [message] = await out.read(1, within_s=10)
    body = orjson.loads(message.value)
    assert message.key == route_id.encode() and message.header("event-id")
    assert body["route_id"] == route_id and body["lang"] == "ru"
    assert 3 <= len(body["stories"]) <= 5 and "Кремль" in body["stories"][0]["text"]


async def test_tts_request_becomes_stored_speech_and_tts_completed_keyed_by_audio_id(make_settings, route_id):
    async with serving([TTS], make_settings(), embedded=True) as (app, _):
        out = await open_topic_log(app.state.infra.bus, topics.TTS_COMPLETED)
        await _send(app, topics.TTS_REQUESTED, f"{route_id}-s1", _request(route_id))
        await _send(app, topics.TTS_REQUESTED, f"{route_id}-s1", _request(route_id), raw=True)  # redelivery
        first, again = await out.read(2, within_s=20)
        body = orjson.loads(first.value)
        stored = await app.state.infra.storage.get(audio_key(body["audio_id"]))
    assert body["status"] == "completed" and body["attempt"] == 1 and body["position"] == 0
    assert first.key == body["audio_id"].encode()
    assert orjson.loads(again.value)["audio_id"] == body["audio_id"]  # one object, overwritten
    assert stored[:4] == b"RIFF" and stored[8:12] == b"WAVE"
    assert 1.0 < body["duration_s"] < 6.0
    with wave.open(io.BytesIO(stored)) as audio:
        assert abs(audio.getnframes() / audio.getframerate() - body["duration_s"]) < 0.01


async def test_injected_failures_fail_the_first_attempt_and_let_the_next_one_through(
    make_settings, route_id, monkeypatch
):
    monkeypatch.setenv("TTS_FAIL_STORIES", f"{route_id}-s1")
    monkeypatch.setenv("TTS_MODE", "instant")
    async with serving([TTS], make_settings(), embedded=True) as (app, _):
        out = await open_topic_log(app.state.infra.bus, topics.TTS_COMPLETED)
        await _send(app, topics.TTS_REQUESTED, f"{route_id}-s1", _request(route_id, attempt=1))
        [failed] = await out.read(1, within_s=10)
        await _send(app, topics.TTS_REQUESTED, f"{route_id}-s1", _request(route_id, attempt=2))
        [ok] = await out.read(1, within_s=10)
    failed_body, ok_body = orjson.loads(failed.value), orjson.loads(ok.value)
    assert failed_body["status"] == "failed" and "injected failure" in failed_body["error"]
    assert (ok_body["status"], ok_body["attempt"]) == ("completed", 2)


async def test_a_tts_request_without_text_goes_to_the_dead_letter_topic(make_settings, route_id):
    async with serving([TTS], make_settings(consumer_max_attempts=1), embedded=True) as (app, _):
        dlq = await open_topic_log(app.state.infra.bus, topics.DLQ)
        await _send(app, topics.TTS_REQUESTED, route_id, {"route_id": route_id, "story_id": "s1"})
        [dead] = await dlq.read(1, within_s=10)
    assert orjson.loads(dead.value) == {"route_id": route_id, "story_id": "s1"}


async def test_a_run_of_requests_is_answered_once_each_and_a_bad_one_among_them_goes_to_the_dlq_alone(
    make_settings, route_id, monkeypatch
):
    monkeypatch.setenv("TTS_MODE", "instant")
    requests = [
        _request(f"{route_id}-{r}", story=f"s{n}", text=f"История {r}.{n}.") | {"position": n}
        for r in range(10)
        for n in range(3)
    ]
    async with serving([TTS], make_settings(consumer_max_attempts=1), embedded=True) as (app, _):
        out = await open_topic_log(app.state.infra.bus, topics.TTS_COMPLETED)
        dlq = await open_topic_log(app.state.infra.bus, topics.DLQ)
        producer = app.state.infra.bus.producer()
        await producer.start()
        bad = {"route_id": route_id, "story_id": "no-text"}
        await producer.send_many(
            [
                encode(Event(topics.TTS_REQUESTED, r, key=r["story_id"]), topics.TTS_REQUESTED, "bare")
                for r in requests
            ]
            + [encode(Event(topics.TTS_REQUESTED, bad, key="no-text"), topics.TTS_REQUESTED, "bare")]
        )
        await producer.stop()
        results = await out.read(len(requests), within_s=20)
        [dead] = await dlq.read(1, within_s=10)
    bodies = [orjson.loads(m.value) for m in results]
    assert sorted(b["story_id"] for b in bodies) == sorted(r["story_id"] for r in requests)
    assert all(b["status"] == "completed" for b in bodies)
    assert orjson.loads(dead.value) == bad
