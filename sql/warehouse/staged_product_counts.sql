-- Outcome counts of the staged catalogue (one pseudo-day: the catalogue is not partitioned).
SELECT NULL AS event_date, coalesce(reason, 'accepted') AS outcome, count(*) AS n_rows
FROM staged_products
GROUP BY ALL
ORDER BY ALL;
