"""Keel: five event-driven services on HTTP, PostgreSQL, Redis and Kafka, and the core they share."""

__version__ = "0.1.0"
