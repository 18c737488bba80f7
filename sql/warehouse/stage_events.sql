-- One row per source row of one event type whose timestamp falls in [$window_start, $window_end) or cannot be read,
-- with its parsed timestamp and `reason` = why it is refused (NULL = accepted).
-- Reads the temp view `source_rows` (client_id, ts_raw, sku, url, query_text, source_file, source_row).
CREATE OR REPLACE TEMP TABLE staged_events AS
WITH in_window AS (
    SELECT *, TRY_CAST(ts_raw AS TIMESTAMP) AS ts
    FROM source_rows
    WHERE ts IS NULL OR (ts >= $window_start AND ts < $window_end)
),
checked AS (
    SELECT
        r.*,
        CASE
            WHEN r.client_id IS NULL THEN 'null_client_id'
            WHEN r.ts IS NULL THEN 'unparseable_timestamp'
            WHEN $payload = 'sku' AND r.sku IS NULL THEN 'null_sku'
            WHEN $payload = 'sku' AND p.sku IS NULL THEN 'unknown_sku'
            WHEN $payload = 'url' AND r.url IS NULL THEN 'null_url'
            WHEN $payload = 'query' AND r.query_text IS NULL THEN 'null_query'
            WHEN $payload = 'query' AND NOT is_code_string(r.query_text) THEN 'malformed_query'
        END AS problem
    FROM in_window AS r
    LEFT JOIN product_properties AS p ON r.sku = p.sku AND $payload = 'sku'
)
SELECT
    *,
    coalesce(
        problem,
        CASE WHEN row_number() OVER (
            PARTITION BY client_id, ts_raw, sku, url, query_text ORDER BY source_file, source_row
        ) > 1 THEN 'duplicate' END
    ) AS reason
FROM checked;
