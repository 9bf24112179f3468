"""The relay's SQL, in one place so its use of the indexes can be read together.

The partial index `ix_outbox_events_unpublished (shard, id) WHERE published_at IS NULL` serves the
claim and the lag probes. Rows leave the table once the broker acknowledged them (`DELETE_PUBLISHED`);
`published_at` is set only by relays of releases before migration 0070, which marked rows instead, and
the claim skips what they marked.

Each statement says "shard `s`" as `shard >= s AND shard <= s` with `ORDER BY shard, id`. Written
`shard = s … ORDER BY id`, the planner may walk the primary key in id order filtering on the shard, or
probe with a sequential scan: it reckons live rows spread evenly, so a shard's first row would come
within a few rows. But an outbox's head is the rows the relay just deleted, which those scans step
through until vacuum comes, so each claim of a draining backlog cost more than the last
(bench/results/changes.md). Only the (shard, id) index yields rows in (shard, id) order over a range
of shards, so the written order fixes the plan; tests/integration/outbox/test_outbox_plans.py checks it.
"""

from __future__ import annotations

# Advisory-lock namespace of outbox shards (the two-int form: class, shard), "keel" in ASCII.
LOCK_CLASS = 0x6B65656C

# What the relay sends of each row (`relay.to_message`), selected from `o`: the record's value built
# here around the payload's stored text, by the server in C rather than by the relay in Python — the
# envelope (`keel.core.events.encode`'s fields, created-at in its UTC form) for wire 'envelope', the
# payload alone for 'bare' — and the bare wire's header texts.
CREATED = """to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
RECORD_COLUMNS = f"""o.id, o.shard, o.topic, o.key, o.wire, o.event_id::text AS event_id, o.event_type,
       {CREATED} AS created, o.headers::text AS headers,
       convert_to(CASE o.wire WHEN 'bare' THEN o.payload::text ELSE
           '{{"event_id":"' || o.event_id::text || '","event_type":' || to_json(o.event_type)::text
           || ',"created_at":"' || {CREATED} || '","payload":' || o.payload::text || '}}'
       END, 'UTF8') AS value"""

# One statement, one round trip: take the advisory locks of up to $3 shards that have unpublished
# rows, trying them in the order of $1 (shuffled by the caller, so relays spread over the shards),
# then return each locked shard's oldest unpublished rows, all shards together in id order.
#  - `LIMIT` over the unnest stops pulling rows once $3 locks are held, so no extra lock is taken;
#    CASE makes the cheap probe (a shard's first row, from the index) run before the lock attempt
#    (AND has no evaluation order). Not EXISTS: the planner drops an EXISTS subquery's ORDER BY.
#  - MATERIALIZED keeps the volatile lock calls in one place, evaluated once.
#  - Per shard, a prefix in id order (no gap inside a key) of an equal share of the batch, so
#    under $4 + shards rows are locked, not $4 per shard (a row lock costs a write); cutting the
#    union at $4 in id order still leaves a prefix of each shard. FOR UPDATE reads the newest row version,
#    so rows another relay published (deleted) since our snapshot was taken are dropped, not sent
#    twice.
CLAIM = f"""
WITH locked AS MATERIALIZED (
    SELECT c.s
    FROM unnest($1::int[]) AS c(s)
    WHERE CASE
        WHEN (SELECT true FROM outbox_events p
              WHERE p.shard >= c.s AND p.shard <= c.s AND p.published_at IS NULL
              ORDER BY p.shard, p.id LIMIT 1)
        THEN pg_try_advisory_xact_lock($2, c.s)
        ELSE false
    END
    LIMIT $3
)
SELECT {RECORD_COLUMNS}
FROM locked l
CROSS JOIN LATERAL (
    SELECT e.*
    FROM outbox_events e
    WHERE e.shard >= l.s AND e.shard <= l.s AND e.published_at IS NULL
    ORDER BY e.shard, e.id
    LIMIT (SELECT ($4 + count(*) - 1) / count(*) FROM locked)
    FOR UPDATE SKIP LOCKED
) o
ORDER BY o.id
LIMIT $4
"""

# Deleted, not marked: the topic is the record of what was published. An UPDATE writes a new version
# of each row (the payload copied) and an entry in every index, and retention deleted the row later
# anyway (docs/design-decisions.md has the figures).
DELETE_PUBLISHED = "DELETE FROM outbox_events WHERE id = ANY($1::bigint[])"

# The oldest unpublished row is at the head of some shard: one index probe per shard, whatever the
# backlog. The count is capped so a huge backlog cannot make the gauge itself slow.
STATS = """
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM outbox_events WHERE published_at IS NULL LIMIT $2
    ) AS p) AS pending,
    (SELECT extract(epoch FROM clock_timestamp() - min(h.created_at))
     FROM generate_series(0, $1 - 1) AS s
     CROSS JOIN LATERAL (
        SELECT created_at FROM outbox_events
        WHERE shard >= s AND shard <= s AND published_at IS NULL
        ORDER BY shard, id LIMIT 1
     ) AS h) AS lag_s
"""

# Rows in a shard no relay serves (OUTBOX_SHARDS was lowered after they were written).
STRANDED = "SELECT count(*) FROM (SELECT 1 FROM outbox_events WHERE shard >= $1 AND published_at IS NULL LIMIT 1000) AS s"
