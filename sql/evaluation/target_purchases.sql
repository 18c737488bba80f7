-- Purchases in the two target windows after the as-of day: window 1 = ($as_of, $as_of + 14], window 2 = the 14
-- days after. `new_sku` = the sku had no event of any type on or before the as-of day (it appeared afterwards).
WITH seen_before AS (
    SELECT DISTINCT sku FROM events WHERE sku IS NOT NULL AND event_date <= $as_of
)
SELECT
    e.client_id,
    CASE WHEN e.event_date <= $as_of + $window_days THEN 1 ELSE 2 END AS target_window,
    e.sku,
    p.category,
    p.price,
    s.sku IS NULL AS new_sku
FROM events AS e
JOIN product_properties AS p ON e.sku = p.sku
LEFT JOIN seen_before AS s ON e.sku = s.sku
WHERE e.event_type = 'product_buy'
  AND e.event_date > $as_of
  AND e.event_date <= $as_of + 2 * $window_days
ORDER BY ALL;
