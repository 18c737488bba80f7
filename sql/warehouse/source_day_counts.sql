-- Rows per event day in the given source files (unreadable timestamps left out): the input of day-range detection.
SELECT CAST(TRY_CAST("timestamp" AS TIMESTAMP) AS DATE) AS event_day, count(*) AS n_rows
FROM read_parquet($files, union_by_name = true)
WHERE event_day IS NOT NULL
GROUP BY ALL
ORDER BY event_day;
