-- An exact duplicate (same client, raw timestamp and payload) with no other problem is refused after its first copy
-- in file order. Only rows whose key hash repeats can be duplicates, so only they are numbered by their five key
-- columns: `repeated_key_hashes` (key_hash) holds the hashes that occur more than once in `staged_events`, found
-- by the caller (ingest.py, by sorting the hashes: faster than a GROUP BY over millions of distinct ones).
UPDATE staged_events AS s
SET reason = 'duplicate'
FROM (
    SELECT file_index, source_row
    FROM staged_events
    WHERE key_hash IN (SELECT key_hash FROM repeated_key_hashes)
    QUALIFY row_number() OVER (
        PARTITION BY client_id, ts_raw, sku, url, query_text ORDER BY file_index, source_row
    ) > 1
) AS later_copies
WHERE s.file_index = later_copies.file_index AND s.source_row = later_copies.source_row AND s.reason IS NULL;
