DROP INDEX IF EXISTS attempts_started_brin;
DROP INDEX IF EXISTS processed_at_brin;
DROP INDEX IF EXISTS dead_letters_tenant_idx;
DROP INDEX IF EXISTS events_source_received_idx;
DROP INDEX IF EXISTS events_received_id_idx;
DROP TABLE IF EXISTS jobs;
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS api_keys;
