-- Tenants' own HTTP destinations (`/v1/subscriptions`): every event of the tenant whose type
-- matches one of `event_types` (route-style `*` wildcards) is POSTed to `url`, signed with
-- Standard Webhooks headers under the subscription's secret, by the workers, which reload this
-- table every HOOKLINE_SUBSCRIPTION_REFRESH.
CREATE TABLE subscriptions (
    id            text PRIMARY KEY,                -- `sub_<hex>`; the handler name is `sub:<id>`
    tenant        text NOT NULL,
    url           text NOT NULL,
    event_types   text[] NOT NULL,
    description   text NOT NULL DEFAULT '',
    -- The `whsec_…` signing secret, AES-256-GCM under HOOKLINE_SECRET_KEY, bound to the id.
    sealed_secret bytea NOT NULL,
    max_attempts  int NOT NULL CHECK (max_attempts BETWEEN 1 AND 20),
    timeout_ms    int NOT NULL CHECK (timeout_ms BETWEEN 100 AND 30000),
    paused        boolean NOT NULL DEFAULT false,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_tenant_idx ON subscriptions (tenant, created_at);
