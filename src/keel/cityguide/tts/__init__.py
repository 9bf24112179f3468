"""The cityguide tts service."""
