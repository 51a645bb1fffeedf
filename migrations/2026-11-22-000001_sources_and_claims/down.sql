DROP TABLE dedup_claims;
DROP TABLE source_secrets;
DROP TABLE sources;
