-- Sources: what a provider posts to. Secrets live in their own table, sealed with AES-256-GCM.
CREATE TABLE sources (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    provider    text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Bumped on every change (secrets included) so the ingress cache rebuilds just that source.
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sources_tenant_idx ON sources (tenant);

CREATE TABLE source_secrets (
    id          bigserial PRIMARY KEY,
    source_id   text NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    -- nonce || ciphertext || tag, with the source id as associated data.
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- NULL: valid until rotated. Set to now() + grace by `sources rotate-secret`.
    expires_at  timestamptz
);
CREATE INDEX source_secrets_source_idx ON source_secrets (source_id);

-- Dedup claims: pending -> published. A pending claim older than the stale window is
-- reclaimable (its publisher crashed); any claim past expires_at is forgotten.
CREATE TABLE dedup_claims (
    source_id   text NOT NULL,
    dedup_key   text NOT NULL,
    event_id    uuid NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'published')),
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (source_id, dedup_key)
);
CREATE INDEX dedup_claims_expires_idx ON dedup_claims (expires_at);
