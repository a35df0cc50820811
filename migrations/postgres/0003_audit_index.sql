-- The audit (SPEC §18, `GET /api/v1/audit`): the entries that record what a person did, found
-- without reading the whole log. Partial, so the agents' entries (nearly all of them) cost
-- nothing more to write. The kinds are shared::log::LogKind::AUDITED, in the same order (the
-- audit query repeats this list word for word, so the planner can use the index; a test
-- checks the plan).
CREATE INDEX event_log_audit ON event_log (seq) WHERE kind IN ('OperatorAction', 'ManifestSetUpdated', 'QuarantineAdded', 'QuarantineReleased', 'FreezeStarted', 'FreezeReleased', 'HostSuspended', 'HostResumed');
