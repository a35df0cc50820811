-- Webhooks (SPEC §18): where each webhook's deliveries stand, by its name: the last log seq
-- delivered (or passed over as not wanted). Written by the leader's deliverer after each
-- delivery, so a restart (or a new leader) resumes with the first entry not yet taken.
CREATE TABLE webhook_cursors (
    name       text   PRIMARY KEY,
    seq        bigint NOT NULL,
    updated_at text   NOT NULL
);
