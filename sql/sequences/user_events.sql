-- One row per event in the lookback window ($as_of - $lookback_days, $as_of], all five types merged, by user, then
-- time; the packer (user_sequences._sequence_order) orders the events of a user that share a timestamp.
-- Columns: client_id, the fields of ubp_pipeline/core/sequences/schema.py whose source is `events` (in that order,
-- which build_sequences checks), then `catalogue_row`: the event's row in the view of sequence_catalogue.sql (run
-- first; NULL without a sku in the catalogue), from which the packer takes the catalogue fields after this sort, so
-- the sort does not carry them.
SELECT
    e.client_id,
    CAST(enum_code(e.event_type) AS UTINYINT) AS event_type,
    e.ts,
    e.sku,
    e.url,
    e.query,
    c.catalogue_row
FROM events AS e
LEFT JOIN sequence_catalogue AS c ON e.sku = c.sku
WHERE e.event_date > $as_of - $lookback_days AND e.event_date <= $as_of
ORDER BY e.client_id, e.ts
