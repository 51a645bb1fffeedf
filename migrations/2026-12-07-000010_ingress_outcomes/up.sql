-- What the ingress answered, per source and minute: one row per (source, minute, outcome) with
-- the number of requests and the first and last of them. Counters, not a ledger: each ingress
-- replica adds what it gathered every few seconds (HOOKLINE_INGRESS_OUTCOME_FLUSH), so a
-- replica killed with -9 loses at most that much counting, never an event. Unknown source ids
-- are not recorded (anyone can post to any path; that must not grow a table).
CREATE TABLE ingress_outcomes (
    source_id   text NOT NULL,
    minute      timestamptz NOT NULL,
    -- `queued`, `duplicate`, `handshake`, or the error code the request was answered with
    -- (`invalid_signature`, `stale_timestamp`, `payload_too_large`, `unavailable`, ...).
    outcome     text NOT NULL,
    count       bigint NOT NULL CHECK (count > 0),
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (source_id, minute, outcome)
);
-- Retention deletes by age.
CREATE INDEX ingress_outcomes_minute_idx ON ingress_outcomes (minute);
