-- Replace the days [$first_day, $last_day] of one event type with the accepted rows of `staged_events`, and its
-- quarantine rows for those days (plus rows of the same files whose timestamp could not be read).
-- Runs inside the caller's transaction, so a failure leaves the previous days in place.
DELETE FROM events
WHERE event_type = $event_type AND event_date BETWEEN $first_day AND $last_day;

INSERT INTO events (event_date, event_type, client_id, ts, sku, url, query)
SELECT CAST(ts AS DATE), $event_type, client_id, ts, sku, url, query_text
FROM staged_events
WHERE reason IS NULL;

DELETE FROM quarantine
WHERE source = $event_type
  AND (event_date BETWEEN $first_day AND $last_day
       OR (event_date IS NULL AND source_file IN (SELECT DISTINCT source_file FROM staged_events)));

INSERT INTO quarantine (source, event_date, source_file, source_row, reason, record, ingested_at)
SELECT
    $event_type,
    CAST(ts AS DATE),
    source_file,
    source_row,
    reason,
    CAST(to_json({client_id: client_id, timestamp: CAST(ts_raw AS VARCHAR), sku: sku, url: url, query: query_text}) AS VARCHAR),
    now()::TIMESTAMP
FROM staged_events
WHERE reason IS NOT NULL;
