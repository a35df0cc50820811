-- What an ended rollout's host records said, counted per wave (SPEC §16): once every entry
-- about an ended rollout has been sealed into the archive, retention replaces its records
-- by this tally (JSON: the hosts per state of each wave, and the stuck hosts), so the
-- records table stays as bounded as the log. The rollout's row stays.
CREATE TABLE rollout_tallies (
    rollout_id TEXT PRIMARY KEY REFERENCES rollouts (rollout_id),
    body       TEXT NOT NULL
) STRICT;
