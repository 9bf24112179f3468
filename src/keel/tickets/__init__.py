"""The ticket service (seed 002): tickets with an outbox, idempotent creates, cached lists,
attachments in object storage, and a consumer that turns ticket events into notifications."""
