"""The video service's SQL, on the raw asyncpg connection (every statement is one round trip)."""

from __future__ import annotations

COLUMNS = "id, title, original_url, owner, status, error, attempts, retries, created_at, updated_at"

# Race-safe duplicate check: the unique constraint decides, no read-then-write window.
INSERT = """
INSERT INTO videos (title, original_url, owner, status, created_at, updated_at)
VALUES ($1, $2, $4, 'pending', $3, $3)
ON CONFLICT (original_url) DO NOTHING
RETURNING id
"""

GET = f"SELECT {COLUMNS} FROM videos WHERE id = $1"

# A job starts (or restarts after a crash: a row already in processing is accepted). Terminal rows
# (ready, failed) return nothing, so a redelivered event for them is a no-op.
START = """
UPDATE videos SET status = 'processing', attempts = attempts + 1, processing_started_at = $2, updated_at = $2
WHERE id = $1 AND status IN ('pending', 'processing')
RETURNING attempts, original_url, title
"""

# The last failure's reason, kept on a row that will be tried again.
RECORD_ERROR = "UPDATE videos SET error = $2, updated_at = $3 WHERE id = $1 AND status = 'processing'"

FAIL = """
UPDATE videos SET status = 'failed', error = $2, processing_started_at = NULL, updated_at = $3
WHERE id = $1 AND status IN ('pending', 'processing')
RETURNING id
"""

READY = """
UPDATE videos SET status = 'ready', error = NULL, processing_started_at = NULL, updated_at = $2
WHERE id = $1 AND status = 'processing'
RETURNING id
"""

# Rows whose job outlived the timeout: those with attempts left go back to pending (and get a new
# event), the others fail. SKIP LOCKED lets several reapers run side by side.
STUCK = """
SELECT id, title, original_url, attempts FROM videos
WHERE status = 'processing' AND processing_started_at < $1
ORDER BY processing_started_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

REQUEUE = """
UPDATE videos SET status = 'pending', processing_started_at = NULL, error = $2, updated_at = $3
WHERE id = $1 AND status = 'processing'
"""

# A failed video back to pending for a new round of attempts (the retry policy bounds each round).
RETRY = f"""
UPDATE videos SET status = 'pending', error = NULL, attempts = 0, retries = retries + 1,
    processing_started_at = NULL, updated_at = $2
WHERE id = $1 AND status = 'failed'
RETURNING {COLUMNS}
"""

STATUS = "SELECT status FROM videos WHERE id = $1"

OWNER = "SELECT owner FROM videos WHERE id = $1"
