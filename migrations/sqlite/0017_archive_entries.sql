-- The archive's own entries (SPEC §16) are retention's cursors: the newest `LogSealed` says
-- where the database's log begins, the `LogCompacted` ones which gaps are compaction's. A
-- partial index finds them without scanning the log; no other entry pays for it. (Its
-- condition is two terms joined by OR: SQLite uses a partial index for `kind = 'LogSealed'`
-- only when that term appears in the index's condition; an IN list does not count.)
CREATE INDEX event_log_archive ON event_log (kind, seq) WHERE kind = 'LogSealed' OR kind = 'LogCompacted';
