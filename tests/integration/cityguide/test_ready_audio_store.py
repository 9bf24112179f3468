"""One contract for both ready-audio stores (in-process and real Redis): order, overwrite, paging, expiry."""

from __future__ import annotations

import pytest

from keel.cityguide.delivery.store import (
    MemoryReadyAudioStore,
    ReadyAudio,
    RedisReadyAudioStore,
    UnknownAudio,
)
from tests.support.eventually import eventually


@pytest.fixture(params=["memory", "redis"])
def make_store(request, redis_client, key_prefix):
    def build(ttl_s: int = 60):
        if request.param == "memory":
            return MemoryReadyAudioStore(ttl_s)
        return RedisReadyAudioStore(redis_client, ttl_s, prefix=key_prefix)

    return build


def audio(n: int, audio_id: str | None = None, duration: float = 1.0) -> ReadyAudio:
    return ReadyAudio(audio_id=audio_id or f"a{n}", story_id=f"s{n}", position=float(n), duration_s=duration)


async def test_audio_comes_back_in_story_order_whatever_the_arrival_order(make_store):
    store = make_store()
    for n in (3, 0, 2, 1):
        await store.put("r1", audio(n))
    assert [a.audio_id for a in await store.next("r1", 10)] == ["a0", "a1", "a2", "a3"]
    assert [a.audio_id for a in await store.next("r1", 2)] == ["a0", "a1"]
    assert await store.next("other-route", 3) == []


async def test_the_same_audio_id_again_overwrites_and_never_duplicates(make_store):
    store = make_store()
    await store.put("r1", audio(0, duration=1.0))
    await store.put("r1", audio(0, duration=2.5))
    assert await store.next("r1", 10) == [audio(0, duration=2.5)]


async def test_after_pages_past_the_named_audio_and_an_unknown_one_is_refused(make_store):
    store = make_store()
    for n in range(5):
        await store.put("r1", audio(n))
    assert [a.audio_id for a in await store.next("r1", 2, after="a1")] == ["a2", "a3"]
    assert await store.next("r1", 2, after="a4") == []
    with pytest.raises(UnknownAudio):
        await store.next("r1", 2, after="nope")


async def test_a_route_list_expires_after_its_ttl(make_store):
    store = make_store(ttl_s=1)
    await store.put("r1", audio(0))
    assert await store.next("r1", 1) == [audio(0)]
    await eventually(lambda: store.next("r1", 1), until=lambda got: got == [], timeout_s=5, what="expiry")


async def test_the_memory_store_expires_by_its_clock():
    now = [100.0]
    store = MemoryReadyAudioStore(30, clock=lambda: now[0])
    await store.put("r1", audio(0))
    now[0] += 29
    assert len(await store.next("r1", 1)) == 1
    now[0] += 2
    assert await store.next("r1", 1) == []


async def test_many_audio_of_several_routes_in_one_write_land_in_each_routes_list_in_story_order(make_store):
    store = make_store()
    await store.put_many(
        [("r1", audio(2)), ("r2", audio(0, "b0")), ("r1", audio(0)), ("r1", audio(2)), ("r1", audio(1))]
    )
    assert [a.audio_id for a in await store.next("r1", 10)] == ["a0", "a1", "a2"]
    assert [a.audio_id for a in await store.next("r2", 10)] == ["b0"]
