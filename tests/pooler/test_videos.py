"""The video service through PgBouncer: its API, its worker and its pipeline on the real broker."""

from __future__ import annotations

from tests.integration.videos.conftest import settings, video_settings  # noqa: F401 - fixtures
from tests.integration.videos.test_videos_api import (  # noqa: F401 - run here through PgBouncer
    test_create_answers_201_with_id_title_and_playlist_url,
    test_duplicate_url_is_409_even_when_posted_concurrently,
    test_second_get_is_a_cache_hit_and_a_worker_update_invalidates_it,
    test_unknown_video_is_404_in_the_error_envelope,
    test_video_goes_from_pending_to_ready_through_the_worker,
)
from tests.integration.videos.test_videos_broker import (  # noqa: F401 - run here through PgBouncer
    test_created_video_is_published_once_and_made_ready_by_the_consumer,
)
