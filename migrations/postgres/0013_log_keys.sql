-- The log's keys by rollout and by host, under the name SQLite keeps them behind the log
-- (migrations/sqlite/0019): here they are the log's own columns, indexed in the log itself
-- (migration 0001), so readers' "tail not copied yet" after `MAX(seq)` is always empty.
CREATE VIEW log_keys AS SELECT seq, rollout_id, host FROM event_log;
