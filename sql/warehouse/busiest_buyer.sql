-- The client with the most purchases in the lookback window of $as_of (ties: the smallest id), or no row: the run
-- summary's example for `ubp recommend --client`, which needs a client with products in that day's sequences.
SELECT client_id
FROM events
WHERE event_type = 'product_buy' AND event_date > $as_of - $lookback_days AND event_date <= $as_of
GROUP BY client_id
ORDER BY count(*) DESC, client_id
LIMIT 1;
