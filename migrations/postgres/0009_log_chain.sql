-- The event log's hash chain (see migrations/sqlite/0015).
ALTER TABLE event_log ADD COLUMN hash bytea;
