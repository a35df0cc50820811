-- Checkpoints of the derived state (see migrations/sqlite/0016).
CREATE TABLE checkpoints (
    seq  bigint PRIMARY KEY,
    at   text  NOT NULL,
    hash bytea NOT NULL,
    body bytea NOT NULL
);
