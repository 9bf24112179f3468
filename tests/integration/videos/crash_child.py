"""A video service process for the crash test: it serves (relay + HLS consumer) until
KEEL_CRASH_POINTS kills it. Run as `python -m tests.integration.videos.crash_child SETTINGS_JSON VIDEOS_JSON`."""

from __future__ import annotations

import asyncio
import sys

from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.videos.settings import VideoSettings
from keel.videos.spec import build_spec


async def main(settings_json: str, videos_json: str) -> None:
    settings = Settings.model_validate_json(settings_json)
    videos = VideoSettings.model_validate_json(videos_json)
    app = build_app([build_spec(videos)], settings)
    async with app.router.lifespan_context(app):
        await asyncio.Event().wait()  # until the crash point ends the process


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
