"""The fields of one event in a user sequence, declared once.

sql/sequences/user_events.sql selects ``client_id`` and every field whose source is ``events``, in this order; the
packer adds the ``catalogue`` fields (read by name from the view of sql/sequences/sequence_catalogue.sql, by the
event's catalogue row) and computes the ``packer`` fields, and writes one list column per stored field to
sequences.parquet; ``load_sequences`` exposes each as a flat array on ``UserSequences`` and computes the ``loader``
field (``day``); the tokenizers read them by name. Adding a field is one entry here plus its column in the SQL (a
packer or loader field: plus its code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

PRICE_BUCKETS = 100  # the catalogue's price is a bucket 0-99 (a percentile), in the challenge format

Loaded = Literal["int", "seconds", "text"]
# events: selected by the SQL; catalogue: taken from the sku's catalogue row by the packer (null where the event has no
# sku or its sku is not in the catalogue), so the SQL's sort does not carry the catalogue's columns; packer: computed
# by the packer; loader: computed on load from stored fields, not stored (every stored list column costs the parquet
# writer about 0.15 s per 10M events).
Source = Literal["events", "catalogue", "packer", "loader"]


@dataclass(frozen=True)
class EventField:
    name: str
    stored: pa.DataType | None  # element type of the list column in sequences.parquet; None for a loader field
    loaded: Loaded = "int"  # int: int64 with -1 where missing; seconds: epoch seconds; text: an Arrow string array
    source: Source = "events"
    dictionary: bool = True  # dictionary-encoded in parquet; off where nearly every value is distinct
    doc: str = ""


EVENT_FIELDS: tuple[EventField, ...] = (
    EventField("event_type", pa.uint8(), doc="code of the event type, in the order of warehouse.events.EVENT_TYPES"),
    EventField("ts", pa.timestamp("us"), "seconds", dictionary=False, doc="when it happened"),
    EventField("sku", pa.int64(), doc="product events only"),
    EventField("category", pa.int64(), source="catalogue", doc="the sku's category"),
    EventField("price", pa.uint8(), source="catalogue", doc=f"the sku's price bucket, 0..{PRICE_BUCKETS - 1}"),
    EventField("url", pa.int64(), doc="page visits only"),
    EventField("query", pa.string(), "text", doc="search queries only: the 16 codes as a string"),
    EventField(
        "name", pa.string(), "text", source="catalogue", doc="product events only: the sku's name, 16 codes as a string"
    ),
    EventField(
        "seconds_since_previous",
        pa.int64(),
        source="packer",
        dictionary=False,
        doc="gap to the user's previous event in the window (kept or cut by max_events)",
    ),
    EventField(
        "day", None, source="loader", doc="days since the data set's first day: the day of ts, by load_sequences"
    ),
)
STORED_FIELDS = tuple(f for f in EVENT_FIELDS if f.source != "loader")
# What sql/sequences/user_events.sql selects: catalogue_row is the event's row in sequence_catalogue.sql.
SELECTED_COLUMNS = ("client_id", *(f.name for f in EVENT_FIELDS if f.source == "events"), "catalogue_row")
CATALOGUE_COLUMNS = tuple(f.name for f in EVENT_FIELDS if f.source == "catalogue")
SEQUENCE_SCHEMA = pa.schema(
    [("client_id", pa.int64()), ("n_events", pa.int64())] + [(f.name, pa.list_(f.stored)) for f in STORED_FIELDS]
)
# Parquet options of sequences.parquet. Timestamps and gaps are nearly all distinct, so their dictionaries are tried
# and abandoned on every page; statistics are kept for client_id only (nothing prunes on an event field). On the
# 10.5M-event benchmark set the writer alone then takes 2.05 s instead of 2.68 s (medians of 3) for the same table,
# in 169 MB instead of 186 MB.
SEQUENCE_WRITE_OPTIONS = {
    "use_dictionary": [f"{f.name}.list.element" for f in STORED_FIELDS if f.dictionary],
    "write_statistics": ["client_id"],
}
