DROP INDEX IF EXISTS attempts_retry_idx;
DROP INDEX IF EXISTS events_entity_idx;
DROP INDEX IF EXISTS events_tenant_type_idx;
DROP INDEX IF EXISTS events_source_received_id_idx;
DROP INDEX IF EXISTS events_tenant_received_id_idx;
CREATE INDEX IF NOT EXISTS events_source_received_idx ON events (source_id, received_at DESC);
CREATE INDEX IF NOT EXISTS events_module_idx ON events (module, event_type);
CREATE INDEX IF NOT EXISTS events_tenant_received_idx ON events (tenant, received_at);
