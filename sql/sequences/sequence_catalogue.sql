-- The catalogue as the sequences see it: one row per sku, numbered in sku order (`catalogue_row`). user_events.sql
-- joins this view for each event's catalogue_row; the packer reads the fields of schema.py whose source is
-- `catalogue` from it in catalogue_row order. One definition, so the two cannot number the rows differently.
CREATE OR REPLACE TEMP VIEW sequence_catalogue AS
SELECT CAST(row_number() OVER (ORDER BY sku) - 1 AS INTEGER) AS catalogue_row, sku, category, price, name
FROM product_properties;
