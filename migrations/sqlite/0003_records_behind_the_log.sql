-- Host records written behind the event log (issue 7). A record change that a log row
-- carries in full (`payload.record`) is not written to host_records at once: the reducer
-- writes the records it deferred in bulk every few seconds, and `record_snapshot.seq` is the
-- last log seq host_records reflects. Until then the newest such log row is the record, and
-- readers see host_records through `current_host_records`, which puts the log's newer rows
-- over the table's.
CREATE TABLE record_snapshot (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
) STRICT;

INSERT INTO record_snapshot (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM event_log;

-- Each record's newest log row after the snapshot. (Written without GROUP BY: grouping made
-- SQLite walk a whole index of the log for its order instead of the tail's seq range.)
CREATE VIEW record_tail AS
SELECT e.rollout_id, e.host AS hostname, e.seq, e.payload
FROM event_log e
WHERE e.seq > (SELECT seq FROM record_snapshot)
  AND +e.rollout_id IS NOT NULL AND +e.host IS NOT NULL
  AND json_type(e.payload, '$.record') = 'object'
  AND NOT EXISTS (
      SELECT 1 FROM event_log n
      WHERE n.host = e.host AND n.seq > e.seq AND n.rollout_id = e.rollout_id
        AND json_type(n.payload, '$.record') = 'object'
  );

CREATE VIEW current_host_records AS
SELECT h.rollout_id, h.hostname, h.state, h.body
FROM host_records h
WHERE NOT EXISTS (SELECT 1 FROM record_tail t WHERE t.rollout_id = h.rollout_id AND t.hostname = h.hostname)
UNION ALL
SELECT rollout_id, hostname, json_extract(payload, '$.record.state'), json_extract(payload, '$.record')
FROM record_tail;
