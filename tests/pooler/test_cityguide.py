"""The cityguide flow through PgBouncer: orchestrator, story, TTS and delivery prefetch on Kafka, the
orchestrator's per-route advisory transaction locks and every consumer's inbox behind the pooler."""

from __future__ import annotations

from tests.integration.cityguide.test_end_to_end_kafka import (  # noqa: F401 - fixture and tests
    flow,
    test_a_confirmed_route_ends_in_signed_links_to_real_speech,
    test_a_failed_tts_job_fails_the_batch_and_a_restart_completes_it_with_attempts_2,
    test_every_event_delivered_twice_changes_nothing,
)
