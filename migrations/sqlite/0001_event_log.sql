-- The event log (SPEC §8): append-only audit trail and the source of the live feed.
-- `seq` is strictly increasing and doubles as the SSE `id`; rollout and record rows must be
-- re-derivable by replaying it. AUTOINCREMENT guarantees a seq is never reused, even after
-- the newest row is deleted.
CREATE TABLE event_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         TEXT    NOT NULL,          -- RFC 3339, UTC
    kind       TEXT    NOT NULL,
    rollout_id TEXT,
    host       TEXT,
    channel    TEXT,
    payload    TEXT    NOT NULL           -- JSON object
) STRICT;

CREATE INDEX event_log_by_rollout ON event_log (rollout_id, seq);
CREATE INDEX event_log_by_host ON event_log (host, seq);
