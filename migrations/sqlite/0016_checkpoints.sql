-- Checkpoints of the derived state (SPEC §16): at `seq`, every rollout, the records of the
-- rollouts not ended, the quarantines in force and the operators' policies, as JSON
-- compressed with zstd; `hash` is the log's chain head at `seq`.
CREATE TABLE checkpoints (
    seq  INTEGER PRIMARY KEY,
    at   TEXT NOT NULL,
    hash BLOB NOT NULL,
    body BLOB NOT NULL
) STRICT;
