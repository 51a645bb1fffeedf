ALTER TABLE events DROP COLUMN raw_body;
ALTER TABLE events DROP COLUMN headers;
DROP TABLE attempts;
