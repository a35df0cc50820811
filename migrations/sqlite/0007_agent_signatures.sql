-- Signatures of agent writes still within their acceptance window (SPEC §9.1): stored with
-- the writes they carried, so that a restarted control plane (or, on PostgreSQL, a new
-- leader) refuses a replay of a request the previous one accepted. One row per reducer
-- transaction: `keys` is the signatures' first 16 bytes each, concatenated; `expires_at` the
-- unix second after which every one of them is refused for its timestamp anyway.
CREATE TABLE agent_signatures (
    id         INTEGER PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    keys       BLOB    NOT NULL
) STRICT;

CREATE INDEX agent_signatures_by_expiry ON agent_signatures (expires_at);
