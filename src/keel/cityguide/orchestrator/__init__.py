"""The cityguide orchestrator service."""
