-- An exact duplicate (same client, raw timestamp and payload) with no other problem is refused after its first copy
-- in file order. Only rows whose key hash repeats can be duplicates, so only they are numbered by their five key
-- columns: `repeated_key_hashes` (key_hash) holds the hashes that occur more than once in `staged_events`, found
-- by the caller (ingest.py, by sorting the hashes: faster than a GROUP BY over millions of distinct ones).
-- Rows are named by rowid: staged_events is created fresh and never loses a row, so each rowid is one staged row.
UPDATE staged_events
SET reason = 'duplicate'
WHERE reason IS NULL AND rowid IN (
    SELECT rowid
    FROM staged_events
    WHERE key_hash IN (SELECT key_hash FROM repeated_key_hashes)
    QUALIFY row_number() OVER (
        PARTITION BY client_id, ts_raw, sku, url, query_text ORDER BY file_index, source_row
    ) > 1
);
