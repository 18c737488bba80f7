-- One row per user with events in ($as_of - $lookback_days, $as_of]: hand-made behaviour statistics.
-- Per event type: count, mean gap between events (days), week-over-week and month-over-month count change, days
-- since the first and the last event. Per user: popularity of what they touched, prices, cart-to-buy conversion,
-- active days and weeks. NULL = not applicable (e.g. no event of that type); the caller fills defaults.
COPY (
    WITH windowed AS (
        SELECT e.client_id, e.event_type, e.ts, e.event_date, e.sku, e.url, p.category, p.price
        FROM events AS e
        LEFT JOIN product_properties AS p ON e.sku = p.sku
        WHERE e.event_date > $as_of - $lookback_days AND e.event_date <= $as_of
    ),
    per_type AS (
        SELECT
            client_id,
            event_type,
            count(*) AS count,
            (epoch(max(ts)) - epoch(min(ts))) / 86400.0 / nullif(count(*) - 1, 0) AS mean_gap_days,
            count(*) FILTER (WHERE event_date > $as_of - 7)
                - count(*) FILTER (WHERE event_date > $as_of - 14 AND event_date <= $as_of - 7) AS week_change,
            count(*) FILTER (WHERE event_date > $as_of - 30)
                - count(*) FILTER (WHERE event_date > $as_of - 60 AND event_date <= $as_of - 30) AS month_change,
            date_diff('day', min(event_date), $as_of) AS days_since_first,
            date_diff('day', max(event_date), $as_of) AS days_since_last
        FROM windowed
        GROUP BY ALL
    ),
    by_type AS (
        PIVOT per_type
        ON event_type IN ('add_to_cart', 'remove_from_cart', 'product_buy', 'page_visit', 'search_query')
        USING
            first(count) AS count,
            first(mean_gap_days) AS mean_gap_days,
            first(week_change) AS week_change,
            first(month_change) AS month_change,
            first(days_since_first) AS days_since_first,
            first(days_since_last) AS days_since_last
        GROUP BY client_id
    ),
    sku_popularity AS (SELECT sku, count(*) AS n FROM windowed WHERE sku IS NOT NULL GROUP BY ALL),
    category_popularity AS (SELECT category, count(*) AS n FROM windowed WHERE category IS NOT NULL GROUP BY ALL),
    url_popularity AS (SELECT url, count(*) AS n FROM windowed WHERE url IS NOT NULL GROUP BY ALL),
    carted AS (SELECT DISTINCT client_id, sku, category FROM windowed WHERE event_type = 'add_to_cart'),
    bought AS (SELECT DISTINCT client_id, sku, category FROM windowed WHERE event_type = 'product_buy'),
    conversion AS (
        SELECT
            c.client_id,
            count(DISTINCT b.sku) / count(DISTINCT c.sku) AS carted_skus_bought,
            count(DISTINCT bc.category) / count(DISTINCT c.category) AS carted_categories_bought
        FROM carted AS c
        LEFT JOIN bought AS b ON c.client_id = b.client_id AND c.sku = b.sku
        LEFT JOIN bought AS bc ON c.client_id = bc.client_id AND c.category = bc.category
        GROUP BY ALL
    ),
    per_user AS (
        SELECT
            w.client_id,
            avg(ln(1 + sp.n)) AS mean_log_sku_popularity,
            avg(ln(1 + cp.n)) AS mean_log_category_popularity,
            avg(ln(1 + up.n)) AS mean_log_url_popularity,
            avg(w.price) FILTER (WHERE w.event_type = 'product_buy') AS mean_bought_price,
            sum(w.price) FILTER (WHERE w.event_type = 'product_buy') AS total_bought_price,
            avg(w.price) FILTER (WHERE w.event_type = 'add_to_cart') AS mean_carted_price,
            count(DISTINCT w.category) AS distinct_categories,
            count(DISTINCT w.event_date) AS active_days,
            count(DISTINCT date_diff('day', w.event_date, $as_of) // 7) AS active_weeks
        FROM windowed AS w
        LEFT JOIN sku_popularity AS sp ON w.sku = sp.sku
        LEFT JOIN category_popularity AS cp ON w.category = cp.category
        LEFT JOIN url_popularity AS up ON w.url = up.url
        GROUP BY ALL
    )
    SELECT *
    FROM per_user
    JOIN by_type USING (client_id)
    LEFT JOIN conversion USING (client_id)
    ORDER BY client_id
) TO $out (FORMAT parquet);
