-- A channel's history: see migrations/sqlite/0012_rollout_progress.sql.
CREATE INDEX event_log_progress ON event_log (rollout_id, seq) WHERE kind IN ('WaveAdvanced', 'WaveApproved', 'OperatorAction', 'RolloutStateChanged');
