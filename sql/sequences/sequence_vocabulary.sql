-- The vocabularies of one sequences partition: per field its most frequent values among the kept events
-- (ties broken by value), rank 1 = most frequent. Everything else is out-of-vocabulary for the models.
COPY (
    WITH values_seen AS (
        SELECT 'sku' AS field, unnest(sku) AS value FROM read_parquet($sequences)
        UNION ALL
        SELECT 'url', unnest(url) FROM read_parquet($sequences)
        UNION ALL
        SELECT 'category', unnest(category) FROM read_parquet($sequences)
    )
    SELECT
        field,
        value,
        count(*) AS n_events,
        row_number() OVER (PARTITION BY field ORDER BY count(*) DESC, value) AS rank
    FROM values_seen
    WHERE value IS NOT NULL
    GROUP BY field, value
    QUALIFY rank <= CASE field WHEN 'sku' THEN $top_skus WHEN 'url' THEN $top_urls ELSE $top_categories END
    ORDER BY field, rank
) TO $out (FORMAT parquet);
