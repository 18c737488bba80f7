-- Place every row of one event type's source files for a run over the days [$first_day, $last_day] of the
-- configured days [$range_first_day, $range_last_day]. Reads the temp view `source_rows` (client_id, ts_raw, sku,
-- url, query_text, source_file, source_row); the write (stage_events.sql) and the recount (reconcile_event_days.sql)
-- both read the placement from here.
--
-- Every source row gets a placement: `this_window` (its day is being replaced), `other_day` (a configured day outside
-- this window: that day's run ingests it), or, for a row that belongs to no configured day (unreadable timestamp, date
-- outside the range), `unplaced` when this run owns its file and `other_run` when another run does. A file's
-- unplaced rows are owned by the run whose window holds the file's newest configured day (its newest day clamped into
-- the range when it has none), so each is quarantined by one run, not counted again by every day's run.
CREATE OR REPLACE TEMP TABLE ingest_scope AS  -- the days of this run, for the view below (views take no parameters)
SELECT CAST($first_day AS DATE) AS first_day, CAST($last_day AS DATE) AS last_day,
       CAST($range_first_day AS DATE) AS range_first_day, CAST($range_last_day AS DATE) AS range_last_day;

CREATE OR REPLACE TEMP TABLE source_file_owners AS
WITH file_days AS (
    SELECT source_file, CAST(TRY_CAST(ts_raw AS TIMESTAMP) AS DATE) AS day FROM source_rows
)
SELECT
    source_file,
    row_number() OVER (ORDER BY source_file) AS file_index,  -- in name order: staged rows carry this, not the name
    least(greatest(
        coalesce(max(day) FILTER (WHERE day BETWEEN $range_first_day AND $range_last_day), max(day), $range_last_day),
        $range_first_day), $range_last_day) BETWEEN $first_day AND $last_day AS owned_here
FROM file_days
GROUP BY source_file;

CREATE OR REPLACE TEMP VIEW placed_source_rows AS
SELECT
    r.*,
    TRY_CAST(r.ts_raw AS TIMESTAMP) AS ts,
    CASE
        WHEN CAST(ts AS DATE) BETWEEN s.first_day AND s.last_day THEN 'this_window'
        WHEN CAST(ts AS DATE) BETWEEN s.range_first_day AND s.range_last_day THEN 'other_day'
        WHEN o.owned_here THEN 'unplaced'
        ELSE 'other_run'
    END AS placement,
    o.file_index
FROM source_rows AS r
JOIN source_file_owners AS o USING (source_file)
CROSS JOIN ingest_scope AS s;
