"""The cityguide flow: orchestrator, delivery prefetch and the story and TTS workers."""
