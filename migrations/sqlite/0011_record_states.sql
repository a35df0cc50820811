-- Host search by state (`GET /api/v1/hosts?state=Failed`): the records of the channels'
-- current rollouts in one state, found without reading every record of those rollouts.
CREATE INDEX host_records_by_state ON host_records (rollout_id, state);
