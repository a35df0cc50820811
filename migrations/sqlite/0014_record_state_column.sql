-- The state of the record a log row carries whole, in a column of its own (NULL when the
-- row carries none), written by the writer. The records view (migration 0003) found its tail
-- by parsing every payload behind the snapshot and filtered the tail's states by parsing
-- them again; now it reads the column, and parses a payload only for a record it returns.
--
-- Both arms of the view also give `state` and `body` the same (TEXT) affinity: SQLite pushes
-- a query's `WHERE state = …` into the arms of a UNION ALL view only then, so a search by
-- state uses migration 0011's index instead of reading every record of the rollouts.
ALTER TABLE event_log ADD COLUMN record_state TEXT;

-- Only rows behind the snapshot are read as records.
UPDATE event_log SET record_state = json_extract(payload, '$.record.state')
WHERE seq > (SELECT seq FROM record_snapshot) AND json_type(payload, '$.record') = 'object';

DROP VIEW current_host_records;
DROP VIEW record_tail;

CREATE VIEW record_tail AS
SELECT e.rollout_id, e.host AS hostname, e.seq, e.record_state AS state, e.payload
FROM event_log e
WHERE e.seq > (SELECT seq FROM record_snapshot)
  AND +e.rollout_id IS NOT NULL AND +e.host IS NOT NULL AND e.record_state IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM event_log n
      WHERE n.host = e.host AND n.seq > e.seq AND n.rollout_id = e.rollout_id AND n.record_state IS NOT NULL
  );

CREATE VIEW current_host_records AS
SELECT h.rollout_id, h.hostname, h.state, h.body
FROM host_records h
WHERE NOT EXISTS (SELECT 1 FROM record_tail t WHERE t.rollout_id = h.rollout_id AND t.hostname = h.hostname)
UNION ALL
SELECT rollout_id, hostname, state, CAST(json_extract(payload, '$.record') AS TEXT)
FROM record_tail;
