-- The event log's hash chain (SPEC §16): each entry's SHA-256 over the previous entry's hash
-- and its canonical JSON, written by the writer in the entry's own transaction. Entries
-- written before this migration are hashed once, in seq order, when the control plane next
-- loads its state (`db::chain::backfill`), before anything new is written.
ALTER TABLE event_log ADD COLUMN hash BLOB;
