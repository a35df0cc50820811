-- Webhooks (SPEC §18): where each webhook's deliveries stand, by its name: the last log seq
-- delivered (or passed over as not wanted). Written by the webhook's deliverer after each
-- delivery, so a restart resumes with the first entry not yet taken.
CREATE TABLE webhook_cursors (
    name       TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;
