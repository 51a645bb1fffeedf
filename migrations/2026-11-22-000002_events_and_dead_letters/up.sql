-- What the store handler writes: one row per event, idempotent on the event id.
CREATE TABLE events (
    id            uuid PRIMARY KEY,
    source_id     text NOT NULL,
    tenant        text NOT NULL,
    provider      text NOT NULL,
    module        text NOT NULL,
    event_type    text NOT NULL,
    entity_id     text NULL,
    dedup_key     text NOT NULL,
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_received_idx ON events (tenant, received_at);
CREATE INDEX events_module_idx ON events (module, event_type);

-- Which handler already succeeded for which event, written in the same transaction as the
-- handler's effect where it has one, so a redelivered event does not run a handler twice.
CREATE TABLE processed (
    event_id      uuid NOT NULL,
    handler       text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, handler)
);

-- Dead letters archived from the parking queue, for `hookline-worker dlq …`.
CREATE TABLE dead_letters (
    event_id          uuid PRIMARY KEY,
    source_id         text NOT NULL,
    tenant            text NOT NULL,
    provider          text NOT NULL,
    module            text NULL,
    handler           text NULL,
    reason            text NOT NULL,
    attempts          integer NOT NULL,
    last_error        text NOT NULL,
    first_failed_at   timestamptz NOT NULL DEFAULT now(),
    last_failed_at    timestamptz NOT NULL DEFAULT now(),
    -- The original message: body bytes, AMQP headers (as JSON), content type.
    body              bytea NOT NULL,
    headers           jsonb NOT NULL,
    content_type      text NULL,
    status            text NOT NULL DEFAULT 'parked' CHECK (status IN ('parked', 'replayed', 'purged')),
    replay_count      integer NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_status_idx ON dead_letters (status, last_failed_at);
CREATE INDEX dead_letters_source_idx ON dead_letters (source_id);
