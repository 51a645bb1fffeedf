-- One row per handler attempt on an event (store, http, amqp, log), written by the worker in one
-- multi-row INSERT per batch; read by the management API. Rows are facts: never updated.
CREATE TABLE attempts (
    id                bigserial PRIMARY KEY,
    event_id          uuid NOT NULL,
    tenant            text NOT NULL,
    source_id         text NOT NULL,
    handler           text NOT NULL,
    -- Where the event went: the URL without credentials or query, or `exchange/routing key`.
    destination       text NULL,
    -- 1 for the first delivery, then one more per retry.
    attempt           int NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_ms       int NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('done', 'retry', 'dead_letter')),
    http_status       int NULL,
    -- The start of the destination's answer: at most 1 KiB, NUL-free.
    response_excerpt  text NULL,
    -- A short stable name for the failure: timeout, connect, status, data, unavailable, panic, …
    error_class       text NULL,
    error             text NULL,
    -- The worker process (`host:pid`).
    worker            text NOT NULL
);
CREATE INDEX attempts_event_idx ON attempts (event_id, started_at);
CREATE INDEX attempts_tenant_idx ON attempts (tenant, started_at DESC);
CREATE INDEX attempts_handler_idx ON attempts (handler, started_at DESC);

-- The provider headers the ingress forwarded (`hookline-h-*`, without the prefix), as stored by
-- the store handler.
ALTER TABLE events ADD COLUMN headers jsonb NULL;
-- The request body byte for byte, kept only when the jsonb `payload` differs from it: PostgreSQL
-- cannot store U+0000 in jsonb or text, so the store replaces it with U+FFFD in `payload` (and in
-- text columns) and keeps the original here. NULL for every other event.
ALTER TABLE events ADD COLUMN raw_body bytea NULL;
