"""Stories are composed from the route's data, deterministically, 3-5 per route, in Russian."""

from __future__ import annotations

from keel.cityguide.story.generator import compose


def test_the_same_route_always_gets_the_same_stories():
    route = {"route_id": "r1", "mode": "walk", "city": "Казань"}
    assert compose("r1", route) == compose("r1", dict(route))


def test_every_route_gets_three_to_five_stories_with_unique_ids():
    for n in range(40):
        stories = compose(f"route-{n}", {"mode": "walk"})
        assert 3 <= len(stories) <= 5
        assert len({s["story_id"] for s in stories}) == len(stories)
        assert all(s["story_id"].startswith(f"route-{n}-s") for s in stories)
    assert {len(compose(f"route-{n}", {})) for n in range(40)} == {3, 4, 5}


def test_stories_follow_the_routes_points_and_speak_russian():
    route = {"mode": "bike", "city": "Казань", "points": [{"name": "Кремль"}, {"name": "Улица Баумана"}]}
    stories = compose("r2", route)
    assert len(stories) == 3  # at least three, even for two points
    assert "Кремль" in stories[0]["text"] and "Казань" in stories[0]["text"]
    assert "на велосипеде" in stories[0]["text"]
    assert "Улица Баумана" in stories[1]["text"]
    assert all(any("\u0430" <= ch <= "\u044f" for ch in s["text"]) for s in stories)  # Cyrillic


def test_at_most_five_stories_for_a_long_route():
    points = [{"name": f"Точка {n}"} for n in range(9)]
    assert len(compose("r3", {"points": points})) == 5
