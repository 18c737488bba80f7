-- The challenge's aggregated-features baseline, as of a day, in long form (client_id, feature, value):
-- per event type and column (sku/category/price for cart and buy events, url for visits), the 10 most frequent
-- values among the relevant clients' events, and per user the count of events with each of them in the last 1, 7
-- and 30 days before the end of the as-of day; plus each type's total event count per user (searches: see
-- sql/search_queries.sql, the baseline uses their mean codes instead).
WITH relevant AS (
    SELECT UNNEST($relevant_clients) AS client_id
),
history AS (
    SELECT e.client_id, CAST(e.event_type AS VARCHAR) AS event_type, e.event_date, e.sku, e.url, p.category, p.price
    FROM events AS e
    SEMI JOIN relevant AS r ON e.client_id = r.client_id
    LEFT JOIN product_properties AS p ON e.sku = p.sku
    WHERE e.event_date <= $as_of AND e.event_type <> 'search_query'
),
values_long AS (
    SELECT client_id, event_type, event_date, 'sku' AS column_name, sku AS value FROM history WHERE sku IS NOT NULL
    UNION ALL SELECT client_id, event_type, event_date, 'category', category FROM history WHERE category IS NOT NULL
    UNION ALL SELECT client_id, event_type, event_date, 'price', price FROM history WHERE price IS NOT NULL
    UNION ALL SELECT client_id, event_type, event_date, 'url', url FROM history WHERE url IS NOT NULL
),
top_values AS (
    SELECT event_type, column_name, value, row_number() OVER (
        PARTITION BY event_type, column_name ORDER BY count(*) DESC, value
    ) AS rank
    FROM values_long
    GROUP BY event_type, column_name, value
    QUALIFY rank <= 10
),
windowed_counts AS (
    SELECT
        v.client_id,
        v.event_type || '.' || v.column_name || '.top' || t.rank || '.' || w.days || 'd' AS feature,
        count(*) AS value
    FROM values_long AS v
    JOIN top_values AS t USING (event_type, column_name, value)
    JOIN (VALUES (1), (7), (30)) AS w(days) ON v.event_date > $as_of - w.days
    GROUP BY ALL
)
SELECT client_id, feature, CAST(value AS DOUBLE) AS value FROM windowed_counts
UNION ALL
SELECT client_id, event_type || '.count', count(*) FROM history GROUP BY ALL;
