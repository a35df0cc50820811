-- The order in which the manifests in force were accepted (SPEC §2.4: between two releases of
-- a channel signed in the same second, the one accepted later is the newer). Rows written
-- before this column existed keep 0 and load in rollout-id order, as they did.
ALTER TABLE manifest_rollouts ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0;
