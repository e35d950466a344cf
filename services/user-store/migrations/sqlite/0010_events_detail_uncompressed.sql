-- PostgreSQL stores events.detail uncompressed from this version on; SQLite never
-- compressed it. Kept so that both backends share migration numbers.
SELECT 1;
