# ruff: noqa: RUF001 - Russian text, Cyrillic letters intended
"""Stories for a route, composed deterministically from the route's own data (no network, no model):
the same route always gets the same 3-5 Russian stories."""

from __future__ import annotations

import zlib
from typing import Any

MIN_STORIES, MAX_STORIES = 3, 5

MODES = {"walk": "пешком", "bike": "на велосипеде", "car": "на машине", "bus": "на автобусе"}

OPENINGS = (
    "Мы начинаем прогулку у места «{place}».",
    "Следующая остановка — «{place}».",
    "Перед вами «{place}».",
    "Дальше маршрут ведёт к месту «{place}».",
    "Последняя точка маршрута — «{place}».",
)
FACTS = (
    "Здесь когда-то шумел рынок, и купцы спорили о цене мёда и соли.",
    "Местные жители говорят, что в ясный день отсюда видно половину города.",
    "Архитектор этого здания, по преданию, спрятал в стене письмо потомкам.",
    "Каждую весну здесь собираются музыканты, и улица превращается в сцену.",
    "В старых картах это место отмечено крошечной звездой, и никто не знает почему.",
    "Говорят, если загадать желание у этого угла, оно сбудется к осени.",
)


def _places(route: dict[str, Any]) -> list[str]:
    points = route.get("points") or route.get("pois") or []
    names: list[str] = []
    if isinstance(points, list):
        for point in points:
            name = point.get("name") if isinstance(point, dict) else point
            if isinstance(name, str) and name.strip():
                names.append(name.strip()[:80])
    return names


def compose(route_id: str, route: dict[str, Any]) -> list[dict[str, Any]]:
    """[{story_id, title, text}] in route order."""
    seed = zlib.crc32(route_id.encode())
    places = _places(route)
    count = min(max(len(places), MIN_STORIES), MAX_STORIES) if places else MIN_STORIES + seed % 3
    city = str(route.get("city") or "наш город")[:60]
    mode = MODES.get(str(route.get("mode", "")), "пешком")
    stories = []
    for n in range(count):
        place = places[n] if n < len(places) else f"точка {n + 1}"
        opening = OPENINGS[min(n, len(OPENINGS) - 1)] if n < count - 1 else OPENINGS[-1]
        fact = FACTS[(seed + n) % len(FACTS)]
        text = f"{opening.format(place=place)} {fact}"
        if n == 0:
            text = f"Добро пожаловать в {city}! Сегодня мы путешествуем {mode}. {text}"
        stories.append({"story_id": f"{route_id}-s{n + 1}", "title": place, "text": text})
    return stories
