-- Recount over every row of the source files (placed by place_source_rows.sql): rows read, rows now stored for the
-- window's days, rows now quarantined by this run (its days, and the unplaced rows of the files it owns), and rows
-- that other runs account for (other configured days, unplaced rows of files other runs own). Run inside the write's
-- transaction (a mismatch rolls it back) and again after the commit, for the blocking check `rows_reconcile`.
SELECT
    (SELECT count(*) FROM source_rows) AS read_rows,
    (SELECT count(*) FROM events
      WHERE event_type = $event_type AND event_date BETWEEN $first_day AND $last_day) AS accepted_rows,
    (SELECT count(*) FROM quarantine
      WHERE source = $event_type
        AND (event_date BETWEEN $first_day AND $last_day
             OR (source_file IN (SELECT source_file FROM source_file_owners WHERE owned_here)
                 AND (event_date IS NULL OR event_date NOT BETWEEN $range_first_day AND $range_last_day
                      OR reason = 'outside_day_range')))) AS quarantined_rows,
    (SELECT count(*) FROM placed_source_rows WHERE placement IN ('other_day', 'other_run')) AS other_runs_rows;
