-- The archive's own entries (SPEC §16) are retention's cursors: the newest `LogSealed` says
-- where the database's log begins, the `LogCompacted` ones which gaps are compaction's. A
-- partial index finds them without scanning the log; no other entry pays for it.
CREATE INDEX event_log_archive ON event_log (kind, seq) WHERE kind IN ('LogSealed', 'LogCompacted');
