-- The earliest and the latest few source rows dated outside [$first_day, $last_day], to name them in a message.
WITH outside AS (
    SELECT filename AS source_file, file_row_number AS source_row, TRY_CAST("timestamp" AS TIMESTAMP) AS ts
    FROM read_parquet($files, union_by_name = true, filename = true, file_row_number = true)
    WHERE CAST(ts AS DATE) NOT BETWEEN $first_day AND $last_day
)
SELECT DISTINCT * FROM (
    (SELECT * FROM outside ORDER BY ts, source_file, source_row LIMIT $shown)
    UNION ALL
    (SELECT * FROM outside ORDER BY ts DESC, source_file DESC, source_row DESC LIMIT $shown)
)
ORDER BY ts, source_file, source_row;
