-- Attempts are appended in time order and found by time through a BRIN index. A block range
-- that is not summarized yet matches every query, so until autovacuum reaches the table each
-- stats query reads the unsummarized tail whole. With autosummarize, a range is summarized as
-- soon as inserts move past it (an autovacuum work item), so the index stays tight.
ALTER INDEX attempts_started_brin SET (autosummarize = on);
