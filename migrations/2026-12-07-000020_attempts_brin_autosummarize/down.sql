ALTER INDEX attempts_started_brin RESET (autosummarize);
