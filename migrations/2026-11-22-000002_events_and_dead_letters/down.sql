DROP TABLE dead_letters;
DROP TABLE processed;
DROP TABLE events;
