-- The catalogue fields of sequence events (schema.py, source `catalogue`), one row per sku in ascending order:
-- user_events.sql numbers these rows the same way (catalogue_row) for the packer to take from.
SELECT category, price, name
FROM product_properties
ORDER BY sku
