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
