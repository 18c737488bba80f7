-- Stage one event type: the rows this run decides on (see place_source_rows.sql, which runs first), with
-- `reason` = why a row is refused (NULL = accepted).
CREATE OR REPLACE TEMP TABLE staged_events AS
SELECT
    r.*,
    CASE
        WHEN r.client_id IS NULL THEN 'null_client_id'
        WHEN r.ts IS NULL THEN 'unparseable_timestamp'
        WHEN r.placement = 'unplaced' THEN 'outside_day_range'
        WHEN $payload = 'sku' AND r.sku IS NULL THEN 'null_sku'
        WHEN $payload = 'sku' AND p.sku IS NULL THEN 'unknown_sku'
        WHEN $payload = 'url' AND r.url IS NULL THEN 'null_url'
        WHEN $payload = 'query' AND r.query_text IS NULL THEN 'null_query'
        WHEN $payload = 'query' AND NOT is_code_string(r.query_text) THEN 'malformed_query'
    END AS reason,
    hash(r.client_id, r.ts_raw, r.sku, r.url, r.query_text) AS key_hash
FROM placed_source_rows AS r
LEFT JOIN product_properties AS p ON r.sku = p.sku AND $payload = 'sku'
WHERE r.placement IN ('this_window', 'unplaced');

-- An exact duplicate (same client, raw timestamp and payload) with no other problem is refused after its first copy
-- in file order. Only rows whose key hash repeats can be duplicates, so only they are numbered by their five key
-- columns: on 10M events this costs half of numbering every row while staging them.
UPDATE staged_events AS s
SET reason = 'duplicate'
FROM (
    SELECT source_file, source_row
    FROM staged_events
    WHERE key_hash IN (SELECT key_hash FROM staged_events GROUP BY key_hash HAVING count(*) > 1)
    QUALIFY row_number() OVER (
        PARTITION BY client_id, ts_raw, sku, url, query_text ORDER BY source_file, source_row
    ) > 1
) AS later_copies
WHERE s.source_file = later_copies.source_file AND s.source_row = later_copies.source_row AND s.reason IS NULL;
