-- A revoked operator's token and sessions stop working at once; the row stays, so its name
-- keeps naming the actions it took in the log and cannot be taken by someone else.
ALTER TABLE operators ADD COLUMN revoked_at TEXT;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
