-- One row per source row of the catalogue with `reason` = why it is refused (NULL = accepted).
-- Reads the temp view `source_rows` (sku, category, price, name_text, source_file, source_row).
CREATE OR REPLACE TEMP TABLE staged_products AS
WITH checked AS (
    SELECT
        *,
        CASE
            WHEN sku IS NULL THEN 'null_sku'
            WHEN sku < 0 THEN 'negative_sku'
            WHEN category IS NULL THEN 'null_category'
            WHEN price IS NULL OR price < 0 OR price > 99 THEN 'price_out_of_range'
            WHEN name_text IS NULL OR NOT is_code_string(name_text) THEN 'malformed_name'
        END AS problem
    FROM source_rows
)
SELECT
    *,
    coalesce(
        problem,
        CASE WHEN row_number() OVER (PARTITION BY sku ORDER BY problem NULLS FIRST, source_file, source_row) > 1
             THEN 'duplicate_sku' END
    ) AS reason
FROM checked;
