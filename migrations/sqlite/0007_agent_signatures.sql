-- Signatures of agent writes still within their acceptance window (SPEC §9.1): stored with
-- the writes they carried, so that a restarted control plane (or, on PostgreSQL, a new
-- leader) refuses a replay of a request the previous one accepted. `key` is the signature's
-- first 16 bytes; `expires_at` the unix second after which its timestamp is refused anyway.
CREATE TABLE agent_signatures (
    key        BLOB    PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX agent_signatures_by_expiry ON agent_signatures (expires_at);
