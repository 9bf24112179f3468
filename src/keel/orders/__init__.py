"""The order service (seed 004): Kafka → validate → PostgreSQL → in-memory cache → `GET /order/{id}`."""
