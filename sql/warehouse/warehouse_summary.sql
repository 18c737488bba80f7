-- Rows per table and event type: accepted rows, distinct users and days, and quarantined rows.
WITH accepted AS (
    SELECT CAST(event_type AS VARCHAR) AS source, count(*) AS accepted_rows,
           count(DISTINCT client_id) AS users, count(DISTINCT event_date) AS days
    FROM events GROUP BY ALL
    UNION ALL
    SELECT 'product_properties', count(*), NULL, NULL FROM product_properties
),
refused AS (
    SELECT source, count(*) AS quarantined_rows FROM quarantine GROUP BY ALL
)
SELECT source, accepted_rows, users, days, coalesce(quarantined_rows, 0) AS quarantined_rows
FROM accepted LEFT JOIN refused USING (source)
ORDER BY source;
