-- Event search (`GET /v1/events`) at a million events and beyond: every filter it offers has an
-- index that also yields its order (received_at DESC, id DESC), so a page stops after its rows.
-- Measured with `make bench-api` (README "Figures").
--
-- On a large live table, create these by hand first with CREATE INDEX CONCURRENTLY and the same
-- names (writes continue meanwhile); this migration then finds them and only drops the two that
-- nothing reads any more. A plain CREATE INDEX here holds writes to `events` while it builds.

-- Replaced: (tenant, received_at) could not give the id tie-break of the keyset cursor, and
-- (module, event_type) served no query.
DROP INDEX IF EXISTS events_tenant_received_idx;
DROP INDEX IF EXISTS events_module_idx;
DROP INDEX IF EXISTS events_source_received_idx;
CREATE INDEX IF NOT EXISTS events_tenant_received_id_idx ON events (tenant, received_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_source_received_id_idx ON events (source_id, received_at DESC, id DESC);
-- An event type, exact or a prefix pattern (`invoice.*`): the C collation lets LIKE 'invoice.%'
-- be a range scan whatever the database's collation.
CREATE INDEX IF NOT EXISTS events_tenant_type_idx
    ON events (tenant, (event_type COLLATE "C"), received_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_entity_idx
    ON events (entity_id, received_at DESC, id DESC) WHERE entity_id IS NOT NULL;
-- `status=retrying`: the few attempts that were retries, probed per event.
CREATE INDEX IF NOT EXISTS attempts_retry_idx ON attempts (event_id, handler, started_at)
    WHERE outcome = 'retry';

-- source → tenant (and provider): without the dependency the planner multiplies the two
-- selectivities, expects a handful of rows for `tenant = … AND source_id = …` and sorts
-- thousands instead of walking the source's index.
CREATE STATISTICS IF NOT EXISTS events_source_tenant (dependencies) ON tenant, provider, source_id FROM events;

-- `status=dead`: the parked dead letters in their events' order. A dead letter keeps its event's
-- `received_at` (the envelope's `hookline-received-at`, the same value `events` holds), filled in
-- here for the rows archived before.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS received_at timestamptz NULL;
UPDATE dead_letters SET received_at = (headers->>'hookline-received-at')::timestamptz
 WHERE received_at IS NULL
   AND headers->>'hookline-received-at' ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$';
CREATE INDEX IF NOT EXISTS dead_letters_parked_received_idx
    ON dead_letters (tenant, received_at DESC, event_id DESC) WHERE status = 'parked';
CREATE INDEX IF NOT EXISTS dead_letters_parked_all_received_idx
    ON dead_letters (received_at DESC, event_id DESC) WHERE status = 'parked';
ANALYZE events;
