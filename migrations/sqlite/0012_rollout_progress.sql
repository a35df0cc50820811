-- A channel's history (`GET /api/v1/channels/{channel}/history`): each rollout's entries
-- about its waves' progress and who acted, found without reading its hosts' entries. Partial,
-- so the agents' entries cost nothing more to write. The kinds are shared::log::LogKind::PROGRESS,
-- in the same order (the query repeats this list word for word, so the planner can use the
-- index; a test checks the plan).
CREATE INDEX event_log_progress ON event_log (rollout_id, seq) WHERE kind IN ('WaveAdvanced', 'WaveApproved', 'OperatorAction', 'RolloutStateChanged');
