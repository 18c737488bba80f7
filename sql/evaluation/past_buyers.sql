-- Users with at least one purchase on or before the as-of day: the population of the churn task.
SELECT DISTINCT client_id FROM events WHERE event_type = 'product_buy' AND event_date <= $as_of ORDER BY client_id;
