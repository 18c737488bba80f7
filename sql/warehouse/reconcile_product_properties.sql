-- Independent recount after replacing the catalogue: source rows, stored skus, quarantined catalogue rows.
SELECT
    (SELECT count(*) FROM source_rows) AS read_rows,
    (SELECT count(*) FROM product_properties) AS accepted_rows,
    (SELECT count(*) FROM quarantine WHERE source = 'product_properties') AS quarantined_rows;
