-- First and last event day present in the given source files (unreadable timestamps ignored).
SELECT
    CAST(min(TRY_CAST("timestamp" AS TIMESTAMP)) AS DATE) AS first_day,
    CAST(max(TRY_CAST("timestamp" AS TIMESTAMP)) AS DATE) AS last_day
FROM read_parquet($files, union_by_name = true);
