-- Rollouts are listed newest first a page at a time, and each channel's current rollout is
-- found without reading every rollout ever opened.
CREATE INDEX rollouts_by_opened ON rollouts (opened_seq);
CREATE INDEX rollouts_by_channel ON rollouts (channel, opened_seq);
