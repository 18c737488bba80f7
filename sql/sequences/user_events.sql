-- One row per event in the lookback window ($as_of - $lookback_days, $as_of], all five types merged, joined with the
-- catalogue, in sequence order: by user, then time, then a stable tie-break for events sharing a timestamp.
-- Columns in the order of ubp_pipeline/core/sequences/schema.py (EVENT_FIELDS), which the loader checks.
-- day/week count from $first_day, the first day of the data set, so indices mean the same in every partition.
SELECT
    e.client_id,
    CAST(enum_code(e.event_type) AS UTINYINT) AS event_type,
    e.ts,
    e.sku,
    p.category,
    p.price,
    e.url,
    e.query,
    p.name,
    CAST(date_diff('day', $first_day, e.event_date) AS INTEGER) AS day,
    CAST(date_diff('day', $first_day, e.event_date) // 7 AS INTEGER) AS week
FROM events AS e
LEFT JOIN product_properties AS p ON e.sku = p.sku
WHERE e.event_date > $as_of - $lookback_days AND e.event_date <= $as_of
ORDER BY e.client_id, e.ts, e.event_type, e.sku, e.url, e.query
