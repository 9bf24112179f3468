"""Every cityguide topic and who talks on it (all bare payloads, envelope fields in headers).

    route.confirmed          outside → orchestrator          {route_id, mode, ...}           key route_id
    story.generate           orchestrator → story            {route_id, lang, mode, route}   key route_id
    story.generate.completed story → orchestrator            {route_id, lang, stories[]}     key route_id
    tts.requested            orchestrator → tts              {route_id, story_id, text, ...} key story_id
    tts.completed            tts → orchestrator, delivery    {route_id, story_id, audio_id,
                                                              status, duration_s, ...}       key audio_id
    delivery.prefetch        orchestrator → (clients)        {route_id, next_audio[]}        key route_id

`tts.requested` is keyed by story so one route's stories spread over the TTS replicas (the first audio
of a long route does not queue behind the rest); the orchestrator restores story order itself.
"""

from __future__ import annotations

from typing import Literal

ROUTE_CONFIRMED = "route.confirmed"
STORY_GENERATE = "story.generate"
STORY_GENERATED = "story.generate.completed"
TTS_REQUESTED = "tts.requested"
TTS_COMPLETED = "tts.completed"
DELIVERY_PREFETCH = "delivery.prefetch"
DLQ = "cityguide.dlq"

WIRE: Literal["bare"] = "bare"
