-- Per day (NULL = unreadable timestamp) and outcome: how many staged rows were read, accepted and refused.
SELECT
    CAST(ts AS DATE) AS event_date,
    coalesce(reason, 'accepted') AS outcome,
    count(*) AS n_rows
FROM staged_events
GROUP BY ALL
ORDER BY ALL;
