-- Replace the days [$first_day, $last_day] of one event type with the accepted rows of `staged_events`, and its
-- quarantine rows for those days plus the unplaced rows (unreadable timestamp, date outside the configured days)
-- of the files this run owns (see stage_events.sql): replaced, so a re-run never counts a refused row twice.
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
       OR (source_file IN (SELECT source_file FROM source_file_owners WHERE owned_here)
           AND (event_date IS NULL OR event_date NOT BETWEEN $range_first_day AND $range_last_day
                OR reason = 'outside_day_range')));

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
JOIN source_file_owners USING (file_index)
WHERE reason IS NOT NULL;
