-- The management API (`hookline-worker api`): keys, the audit log, jobs.

-- API keys: only the SHA-256 of the key is stored. The keys are 256 bits from the OS's CSPRNG, so
-- a fast hash is enough: nobody can search a 2^256 space, which is what slow password hashes
-- (bcrypt, argon2) defend against when secrets are human-chosen.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,               -- public handle, `key_<hex>`; not a secret
    name         text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    tenant       text NULL,                      -- NULL: every tenant
    allowed_ips  text[] NOT NULL DEFAULT '{}',   -- CIDRs; empty: any address
    expires_at   timestamptz NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    revoked_at   timestamptz NULL
);

-- Every mutation, through the API or the CLI, with its outcome.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,                      -- `key:<id>` or `cli:<user>`
    tenant   text NULL,                          -- the actor's tenant (NULL: all)
    action   text NOT NULL,                      -- `sources.create`, `dead_letters.replay`, …
    target   text NULL,
    outcome  text NOT NULL,                      -- `ok` or the error code
    detail   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);

-- Long-running repairs (dead-letter replay and purge). Any API replica runs queued jobs; a
-- running job holds a lease it renews, so a crashed replica's job is taken over by another.
CREATE TABLE jobs (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('dead_letters.replay', 'dead_letters.purge')),
    tenant       text NULL,                      -- the requesting key's tenant: the job's reach
    params       jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    total        bigint NULL,
    done         bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    error        text NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NULL,
    finished_at  timestamptz NULL,
    lease_owner  text NULL,
    lease_until  timestamptz NULL
);
CREATE INDEX jobs_runnable_idx ON jobs (created_at) WHERE state IN ('queued', 'running');

-- Event search newest first, across tenants (admin keys) and by source, with a stable cursor;
-- retention deletes the oldest events through the same index.
CREATE INDEX events_received_id_idx ON events (received_at DESC, id DESC);
CREATE INDEX events_source_received_idx ON events (source_id, received_at DESC);
CREATE INDEX dead_letters_tenant_idx ON dead_letters (tenant, last_failed_at DESC);

-- Retention finds old `processed` marks and attempts by time. Both tables are append-only and
-- written in time order, so a BRIN index (a few pages, next to no cost per insert on the hot
-- path) narrows the scan to the old block ranges. Event ids are derived from the delivery (UUID
-- v8), not time-ordered, so the primary keys cannot serve.
CREATE INDEX processed_at_brin ON processed USING brin (processed_at);
CREATE INDEX attempts_started_brin ON attempts USING brin (started_at);
