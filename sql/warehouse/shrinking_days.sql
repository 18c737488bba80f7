-- Days of the window that hold stored events but would keep less than $keep_share of them: the source now delivers
-- far fewer rows (accepted or refused) for a day than it did before.
WITH stored AS (
    SELECT event_date, count(*) AS stored_rows
    FROM events
    WHERE event_type = $event_type AND event_date BETWEEN $first_day AND $last_day
    GROUP BY ALL
),
delivered AS (
    SELECT CAST(ts AS DATE) AS event_date, count(*) AS delivered_rows
    FROM staged_events
    WHERE in_window
    GROUP BY ALL
)
SELECT event_date, stored_rows, coalesce(delivered_rows, 0) AS delivered_rows
FROM stored LEFT JOIN delivered USING (event_date)
WHERE coalesce(delivered_rows, 0) < stored_rows * $keep_share
ORDER BY event_date;
