-- Every search of the given users on or before the as-of day (query = 16-code string).
SELECT e.client_id, e.query
FROM events AS e
SEMI JOIN (SELECT UNNEST($clients) AS client_id) AS c ON e.client_id = c.client_id
WHERE e.event_type = 'search_query' AND e.event_date <= $as_of;
