-- Replace the catalogue with the accepted rows of `staged_products` (inside the caller's transaction).
DELETE FROM product_properties;

INSERT INTO product_properties (sku, category, price, name)
SELECT sku, category, CAST(price AS UTINYINT), name_text
FROM staged_products
WHERE reason IS NULL;

DELETE FROM quarantine WHERE source = 'product_properties';

INSERT INTO quarantine (source, event_date, source_file, source_row, reason, record, ingested_at)
SELECT
    'product_properties',
    NULL,
    source_file,
    source_row,
    reason,
    CAST(to_json({sku: sku, category: category, price: price, name: name_text}) AS VARCHAR),
    now()::TIMESTAMP
FROM staged_products
WHERE reason IS NOT NULL;
