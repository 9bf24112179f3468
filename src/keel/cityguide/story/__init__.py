"""The cityguide story service."""
