-- The event log's lookups by rollout and by host, kept behind the log (issue 22). Every
-- event's row used to go into two indexes of `event_log` inside the commit the event waits
-- for, each at a random page (10,000 hosts' runs, a hundred rollouts'); those pages were most
-- of what a commit wrote. Now the writer copies the keys of the rows it committed into
-- `log_keys` a few thousand rows at a time, after the commits, and readers add the short
-- tail of the log not copied yet (`seq > MAX(log_keys.seq)`), which they scan by seq.
CREATE TABLE log_keys (
    seq        INTEGER PRIMARY KEY,
    rollout_id TEXT,
    host       TEXT
) STRICT;

CREATE INDEX log_keys_by_rollout ON log_keys (rollout_id, seq);
CREATE INDEX log_keys_by_host ON log_keys (host, seq);

INSERT INTO log_keys (seq, rollout_id, host) SELECT seq, rollout_id, host FROM event_log;

-- Retention's deletes (the only deletes of log rows) take the keys with them.
CREATE TRIGGER log_keys_follow_deletes AFTER DELETE ON event_log
BEGIN
    DELETE FROM log_keys WHERE seq = old.seq;
END;

DROP INDEX event_log_by_rollout;
DROP INDEX event_log_by_host;

-- The records view (migrations 0003, 0014) found each record's newest row in the tail through
-- the by-host index. Now the tail's newest row of each record is found once per statement,
-- grouping the tail (read by seq); lookups by (rollout, host) then go to that small result.
DROP VIEW current_host_records;
DROP VIEW record_tail;

CREATE VIEW record_tail AS
SELECT t.rollout_id, t.hostname, t.seq, e.record_state AS state, e.payload
FROM (SELECT rollout_id, host AS hostname, MAX(seq) AS seq
      FROM event_log
      WHERE seq > (SELECT seq FROM record_snapshot)
        AND record_state IS NOT NULL AND rollout_id IS NOT NULL AND host IS NOT NULL
      GROUP BY rollout_id, host) AS t
JOIN event_log e ON e.seq = t.seq;

CREATE VIEW current_host_records AS
SELECT h.rollout_id, h.hostname, h.state, h.body
FROM host_records h
WHERE NOT EXISTS (SELECT 1 FROM record_tail t WHERE t.rollout_id = h.rollout_id AND t.hostname = h.hostname)
UNION ALL
SELECT rollout_id, hostname, state, CAST(json_extract(payload, '$.record') AS TEXT)
FROM record_tail;
