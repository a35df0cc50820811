-- Control-plane state (SPEC §8). Rows of rollouts and host records carry their full state as a
-- JSON `body` (the engine's types) plus the columns queries filter on; both are re-derivable
-- by replaying the event log.

-- The verified manifest set in force: the fleet document and one manifest per rollout id,
-- stored as the raw signed artifacts ({artifact, signature}) and re-verified at start.
CREATE TABLE manifest_fleet (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    artifact    TEXT NOT NULL,
    fleet_hash  TEXT NOT NULL,
    received_at TEXT NOT NULL
) STRICT;

CREATE TABLE manifest_rollouts (
    rollout_id  TEXT PRIMARY KEY,
    artifact    TEXT NOT NULL,
    received_at TEXT NOT NULL
) STRICT;

CREATE TABLE rollouts (
    rollout_id   TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL,
    current_wave INTEGER NOT NULL,
    opened_seq   INTEGER NOT NULL,
    body         TEXT NOT NULL
) STRICT;

CREATE TABLE host_records (
    rollout_id TEXT NOT NULL REFERENCES rollouts (rollout_id),
    hostname   TEXT NOT NULL,
    state      TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (rollout_id, hostname)
) STRICT, WITHOUT ROWID;

CREATE INDEX host_records_by_host ON host_records (hostname);

CREATE TABLE quarantines (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    channel        TEXT NOT NULL,
    closure        TEXT NOT NULL,
    reason         TEXT NOT NULL,
    by_whom        TEXT NOT NULL,
    at             TEXT NOT NULL,
    released_at    TEXT,
    released_by    TEXT,
    release_reason TEXT
) STRICT;

-- At most one active quarantine per (channel, closure).
CREATE UNIQUE INDEX quarantines_active ON quarantines (channel, closure) WHERE released_at IS NULL;

-- Last heartbeat per host (the reducer keeps the live copy in memory).
CREATE TABLE host_presence (
    hostname          TEXT PRIMARY KEY,
    last_heartbeat_at TEXT NOT NULL,
    current_closure   TEXT
) STRICT;

-- Operators and their sessions: only SHA-256 hashes of tokens are stored.
CREATE TABLE operators (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    operator_id INTEGER NOT NULL REFERENCES operators (id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) STRICT;
