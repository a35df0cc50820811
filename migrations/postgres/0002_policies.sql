-- The operators' policies in force (SPEC §17): freezes and suspended hosts, as one JSON
-- document (shared::policy::OperatorPolicies) replaced on each change. Their history is the
-- event log (FreezeStarted, FreezeReleased, HostSuspended, HostResumed).
CREATE TABLE policies (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT    NOT NULL
);
