-- Recount of the catalogue: source rows, stored skus, quarantined catalogue rows. Run inside the write's transaction
-- (a mismatch rolls it back) and again after the commit, for the blocking check `rows_reconcile`.
SELECT
    (SELECT count(*) FROM source_rows) AS read_rows,
    (SELECT count(*) FROM product_properties) AS accepted_rows,
    (SELECT count(*) FROM quarantine WHERE source = 'product_properties') AS quarantined_rows;
