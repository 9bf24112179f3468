"""The cityguide delivery service."""
