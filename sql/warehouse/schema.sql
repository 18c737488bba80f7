-- The warehouse: product catalogue, one table of accepted raw events (all five types), and the rows we refused.
-- Enum order is the event-type code used in sequences and models (ubp_pipeline.core.events.EVENT_TYPES).
CREATE TYPE IF NOT EXISTS event_kind AS ENUM ('add_to_cart', 'remove_from_cart', 'product_buy', 'page_visit', 'search_query');

-- A product name or search query: 16 quantised text codes (0-255) printed as '[ 12 201   7 ...]'. Kept as the source
-- string (a fixed-size list column costs more to store than the whole row); consumers parse it vectorised.
CREATE OR REPLACE MACRO is_code_string(text) AS
    regexp_full_match(text, '\[\s*(25[0-5]|2[0-4]\d|[01]?\d?\d)(\s+(25[0-5]|2[0-4]\d|[01]?\d?\d)){15}\s*\]');

-- One row per sku.
CREATE TABLE IF NOT EXISTS product_properties (
    sku      BIGINT PRIMARY KEY,
    category BIGINT NOT NULL,
    price    UTINYINT NOT NULL,
    name     VARCHAR NOT NULL
);

-- One row per accepted source event; event_date (UTC day of ts) is the daily partition it belongs to.
-- sku is set for cart/buy events, url for page visits, query for searches.
CREATE TABLE IF NOT EXISTS events (
    event_date DATE NOT NULL,
    event_type event_kind NOT NULL,
    client_id  BIGINT NOT NULL,
    ts         TIMESTAMP NOT NULL,
    sku        BIGINT,
    url        BIGINT,
    query      VARCHAR
);

-- One row per refused source row, with why; event_date is NULL when the timestamp itself could not be read.
CREATE TABLE IF NOT EXISTS quarantine (
    source     VARCHAR NOT NULL,
    event_date DATE,
    source_file VARCHAR NOT NULL,
    source_row BIGINT NOT NULL,
    reason     VARCHAR NOT NULL,
    record     VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL
);
