-- Independent recount after a write: rows in the source window, rows now stored for those days, rows now quarantined.
SELECT
    (SELECT count(*) FROM source_rows
      WHERE TRY_CAST(ts_raw AS TIMESTAMP) IS NULL
         OR (TRY_CAST(ts_raw AS TIMESTAMP) >= $window_start AND TRY_CAST(ts_raw AS TIMESTAMP) < $window_end)) AS read_rows,
    (SELECT count(*) FROM events
      WHERE event_type = $event_type AND event_date BETWEEN $first_day AND $last_day) AS accepted_rows,
    (SELECT count(*) FROM quarantine
      WHERE source = $event_type
        AND (event_date BETWEEN $first_day AND $last_day
             OR (event_date IS NULL AND source_file IN (SELECT DISTINCT source_file FROM source_rows)))) AS quarantined_rows;
