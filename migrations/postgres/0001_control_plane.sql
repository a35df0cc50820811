-- The control plane's schema on PostgreSQL (SPEC §8, §15): the tables and views of
-- migrations/sqlite/0001–0006 in one step, with the same columns and the same text in them
-- (timestamps are RFC 3339 text, bodies and payloads JSON text), so that one set of queries
-- reads both; and the cluster's leader and replica rows.

-- The event log. `seq` is assigned by the leader's writer inside its fenced transaction
-- (the last seq + 1), not by a sequence: a transaction that rolls back takes no seq with it,
-- so the seqs a feed client sees are contiguous. `epoch` is the leader epoch the row was
-- committed in: which leader wrote what.
CREATE TABLE event_log (
    seq        bigint PRIMARY KEY,
    ts         text   NOT NULL,
    kind       text   NOT NULL,
    rollout_id text,
    host       text,
    channel    text,
    payload    text   NOT NULL,
    epoch      bigint NOT NULL
);

CREATE INDEX event_log_by_rollout ON event_log (rollout_id, seq);
CREATE INDEX event_log_by_host ON event_log (host, seq);

CREATE TABLE manifest_fleet (
    id          smallint PRIMARY KEY CHECK (id = 1),
    artifact    text NOT NULL,
    fleet_hash  text NOT NULL,
    received_at text NOT NULL
);

CREATE TABLE manifest_rollouts (
    rollout_id  text PRIMARY KEY,
    artifact    text NOT NULL,
    received_at text NOT NULL,
    accepted    bigint NOT NULL DEFAULT 0
);

CREATE TABLE rollouts (
    rollout_id   text PRIMARY KEY,
    channel      text NOT NULL,
    state        text NOT NULL,
    current_wave bigint NOT NULL,
    opened_seq   bigint NOT NULL,
    body         text NOT NULL
);

CREATE INDEX rollouts_by_opened ON rollouts (opened_seq);
CREATE INDEX rollouts_by_channel ON rollouts (channel, opened_seq);

CREATE TABLE host_records (
    rollout_id text NOT NULL REFERENCES rollouts (rollout_id),
    hostname   text NOT NULL,
    state      text NOT NULL,
    body       text NOT NULL,
    PRIMARY KEY (rollout_id, hostname)
);

CREATE INDEX host_records_by_host ON host_records (hostname);

CREATE TABLE quarantines (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel        text NOT NULL,
    closure        text NOT NULL,
    reason         text NOT NULL,
    by_whom        text NOT NULL,
    at             text NOT NULL,
    released_at    text,
    released_by    text,
    release_reason text
);

CREATE UNIQUE INDEX quarantines_active ON quarantines (channel, closure) WHERE released_at IS NULL;

CREATE TABLE host_presence (
    hostname          text PRIMARY KEY,
    last_heartbeat_at text NOT NULL,
    current_closure   text
);

CREATE TABLE operators (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    role       text NOT NULL CHECK (role IN ('viewer', 'operator')),
    token_hash text NOT NULL UNIQUE,
    created_at text NOT NULL,
    revoked_at text
);

CREATE TABLE sessions (
    token_hash  text PRIMARY KEY,
    operator_id bigint NOT NULL REFERENCES operators (id),
    created_at  text NOT NULL,
    expires_at  text NOT NULL
);

CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Host records written behind the event log (see migrations/sqlite/0003).
CREATE TABLE record_snapshot (
    id  smallint PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);

INSERT INTO record_snapshot (id, seq) VALUES (1, 0);

-- `json`, not `jsonb`: its `->` hands back the record's own text, byte for byte what the
-- table would hold.
CREATE VIEW record_tail AS
SELECT e.rollout_id, e.host AS hostname, e.seq, (e.payload::json -> 'record')::text AS record
FROM event_log e
WHERE e.seq > (SELECT seq FROM record_snapshot)
  AND e.rollout_id IS NOT NULL AND e.host IS NOT NULL
  AND json_typeof(e.payload::json -> 'record') = 'object'
  AND NOT EXISTS (
      SELECT 1 FROM event_log n
      WHERE n.host = e.host AND n.seq > e.seq AND n.rollout_id = e.rollout_id
        AND json_typeof(n.payload::json -> 'record') = 'object'
  );

CREATE VIEW current_host_records AS
SELECT h.rollout_id, h.hostname, h.state, h.body
FROM host_records h
WHERE NOT EXISTS (SELECT 1 FROM record_tail t WHERE t.rollout_id = h.rollout_id AND t.hostname = h.hostname)
UNION ALL
SELECT rollout_id, hostname, record::json ->> 'state', record
FROM record_tail;

-- Signatures of agent writes still within their acceptance window (see
-- migrations/sqlite/0007).
CREATE TABLE agent_signatures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    expires_at bigint NOT NULL,
    keys       bytea  NOT NULL
);

CREATE INDEX agent_signatures_by_expiry ON agent_signatures (expires_at);

-- The cluster (SPEC §15). One row: the epoch of the current leader and where it is reached.
-- A replica that wins the advisory lock increments the epoch; every reducer transaction
-- first reads it (FOR SHARE) and rolls back unless it is its own, so a deposed leader
-- cannot commit.
CREATE TABLE leader (
    id      smallint PRIMARY KEY CHECK (id = 1),
    epoch   bigint NOT NULL,
    replica text   NOT NULL,
    url     text   NOT NULL,
    since   text   NOT NULL
);

INSERT INTO leader (id, epoch, replica, url, since) VALUES (1, 0, '', '', '');

-- Every replica that ever ran against this database, as it last reported itself (each
-- writes its own row every second).
CREATE TABLE replicas (
    name       text PRIMARY KEY,
    url        text   NOT NULL,
    role       text   NOT NULL,
    epoch      bigint NOT NULL,
    started_at text   NOT NULL,
    last_seen  text   NOT NULL
);
