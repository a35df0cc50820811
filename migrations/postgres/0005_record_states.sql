-- Host search by state: see migrations/sqlite/0011_record_states.sql.
CREATE INDEX host_records_by_state ON host_records (rollout_id, state);
