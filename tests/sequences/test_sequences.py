"""user_sequences against a small pure-Python reference: order, tie-break, truncation, as-of cut, vocabularies."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TINY, TRAIN_DAY
from tests.factories import codes, settings_for, write_source
from ubp_pipeline.core.sequences.schema import SELECTED_COLUMNS
from ubp_pipeline.core.sequences.user_sequences import (
    SEQUENCES_FILE,
    VOCABULARY_FILE,
    SequenceSpec,
    build_sequences,
    load_sequences,
    pack_sequences,
    read_manifest,
)
from ubp_pipeline.core.sequences.vocabulary import ABSENT, FIRST_VALUE, OOV, load_vocabularies
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.events import EVENT_CODE, EVENT_TYPES, PAYLOAD_COLUMN
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.runner import materialize

FIRST, AS_OF = date(2022, 7, 1), date(2022, 7, 4)


def _sequences_config(**config) -> dict:
    return {"ops": {"user_sequences": {"config": config}}}


def _build(defs, instance, first_day, last_day, as_of, **config):
    assert materialize(defs, "group:ingest", instance, partition_range=(first_day, last_day)).success
    result = materialize(defs, "user_sequences", instance, partition=as_of, run_config=_sequences_config(**config))
    assert result.success
    return result


def _reference(source, as_of: date, lookback_days: int, max_events: int, first_day: date) -> dict[int, list[tuple]]:
    """Per user, the kept events as (event_type, sku, url, query, day, seconds_since_previous, category, price, name),
    by plain Python."""
    products = pd.read_parquet(source / "product_properties.parquet")
    catalogue = {
        int(sku): (int(category), int(price), name)
        for sku, category, price, name in zip(*(products[c] for c in ("sku", "category", "price", "name")), strict=True)
    }
    rows = []
    for event_type in EVENT_TYPES:
        frame = pd.read_parquet(source / f"{event_type}.parquet")
        payload = PAYLOAD_COLUMN[event_type]
        for client, ts, value in zip(frame["client_id"], frame["timestamp"], frame[payload], strict=True):
            if payload == "sku" and value not in catalogue:
                continue
            ts = pd.Timestamp(ts).to_pydatetime()
            if not (as_of - timedelta(days=lookback_days) < ts.date() <= as_of):
                continue
            rows.append(
                {
                    "client": int(client),
                    "ts": ts,
                    "type": EVENT_CODE[event_type],
                    "sku": int(value) if payload == "sku" else None,
                    "url": int(value) if payload == "url" else None,
                    "query": value if payload == "query" else None,
                }
            )
    unique = {(r["client"], r["ts"], r["type"], r["sku"], r["url"], r["query"]): r for r in rows}  # exact dups dropped
    by_user: dict[int, list[dict]] = defaultdict(list)
    for row in unique.values():
        by_user[row["client"]].append(row)

    def order(r):  # NULLs sort last, as in the SQL
        return (
            r["ts"],
            r["type"],
            r["sku"] if r["sku"] is not None else math.inf,
            r["url"] if r["url"] is not None else math.inf,
            r["query"] if r["query"] is not None else "\uffff",
        )

    reference = {}
    for client, events in by_user.items():
        events.sort(key=order)
        gaps = [-1] + [int((b["ts"] - a["ts"]).total_seconds()) for a, b in zip(events, events[1:])]
        kept = list(zip(events, gaps))[-max_events:]
        reference[client] = [
            (
                e["type"],
                e["sku"],
                e["url"],
                e["query"],
                (e["ts"].date() - first_day).days,
                gap,
                *catalogue.get(e["sku"], (None, None, None)),
            )
            for e, gap in kept
        ]
    return reference


def _as_tuples(seqs, user: int) -> list[tuple]:
    lo, hi = seqs.offsets[user], seqs.offsets[user + 1]
    queries = seqs.query.slice(lo, hi - lo).to_pylist()
    names = seqs.name.slice(lo, hi - lo).to_pylist()
    return [
        (
            int(seqs.event_type[i]),
            None if seqs.sku[i] < 0 else int(seqs.sku[i]),
            None if seqs.url[i] < 0 else int(seqs.url[i]),
            queries[i - lo],
            int(seqs.day[i]),
            int(seqs.seconds_since_previous[i]),
            None if seqs.category[i] < 0 else int(seqs.category[i]),
            None if seqs.price[i] < 0 else int(seqs.price[i]),
            names[i - lo],
        )
        for i in range(lo, hi)
    ]


def test_sequences_match_a_pure_python_reference_on_generated_data(tiny_defs, tiny_settings, tiny_source, instance):
    as_of = tiny_settings.first_day + timedelta(days=14)
    _build(tiny_defs, instance, tiny_settings.first_day, tiny_settings.last_day, as_of, max_events=16)
    seqs = load_sequences(
        tiny_settings.artifact_dir / "user_sequences" / as_of.isoformat(), text_fields=["query", "name"]
    )
    expected = _reference(tiny_source, as_of, tiny_settings.lookback_days, 16, tiny_settings.first_day)
    assert sorted(seqs.client_ids.tolist()) == sorted(expected)
    assert len(expected) > 100
    for user, client in enumerate(seqs.client_ids):
        assert _as_tuples(seqs, user) == expected[int(client)], f"client {client}"
    assert np.all(seqs.ts < datetime(as_of.year, as_of.month, as_of.day).timestamp() + 86_400)


def _tie_source(tmp_path):
    """Client 1: events sharing timestamps across types, one event after the as-of day, one before the lookback."""
    return write_source(
        tmp_path / "src",
        {
            "page_visit": [
                (1, "2022-07-02 10:00:00", 7),
                (1, "2022-07-02 10:00:00", 5),
                (1, "2022-07-05 09:00:00", 5),
                (2, "2022-07-01 08:00:00", 5),
            ],
            "add_to_cart": [(1, "2022-07-02 10:00:00", 11), (1, "2022-07-03 10:00:00", 10)],
            "product_buy": [(1, "2022-07-03 10:00:00", 10), (1, "2022-07-01 00:00:00", 12)],
            "search_query": [(1, "2022-07-02 10:00:00", codes(9)), (1, "2022-07-02 09:59:55", codes(3, 4))],
        },
    )


def test_ties_truncation_and_the_as_of_cut(tmp_path):
    source = _tie_source(tmp_path)
    settings = settings_for(source, tmp_path / "home", FIRST, date(2022, 7, 5), lookback_days=3)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _build(build_definitions(settings), instance, FIRST, date(2022, 7, 5), AS_OF, max_events=4)
    seqs = load_sequences(settings.artifact_dir / "user_sequences" / AS_OF.isoformat(), text_fields=["query", "name"])
    user = int(np.flatnonzero(seqs.client_ids == 1)[0])
    # window (07-02 .. 07-04]: the 07-01 buy is before the lookback, the 07-05 visit after the as-of day
    assert seqs.n_events[user] == 7
    got = [(EVENT_TYPES[t], s, u) for t, s, u, *_ in _as_tuples(seqs, user)]
    # full window order: search(3,4) 09:59:55; at 10:00:00 add_to_cart < page_visit(5) < page_visit(7) < search(9)
    # (type code, then url); on 07-03 add_to_cart before product_buy. The last four are kept.
    assert got == [
        ("page_visit", None, 7),
        ("search_query", None, None),
        ("add_to_cart", 10, None),
        ("product_buy", 10, None),
    ]
    gaps = seqs.seconds_since_previous[seqs.offsets[user] : seqs.offsets[user + 1]]
    assert gaps.tolist() == [0, 0, 86_400, 0]  # measured before truncation, so the first kept event has a gap
    assert 2 not in seqs.client_ids.tolist()  # client 2's only event is outside the window
    metadata = result.asset_materializations_for_node("user_sequences")[0].metadata
    assert (metadata["users"].value, metadata["events_kept"].value, metadata["truncated_users"].value) == (1, 4, 1)
    # the writer options took (pyarrow ignores a misspelled column path): no dictionary for timestamps and gaps,
    # statistics for client_id only
    written = pq.ParquetFile(settings.artifact_dir / "user_sequences" / AS_OF.isoformat() / SEQUENCES_FILE)
    row_group = written.metadata.row_group(0)
    columns = {c.path_in_schema: c for c in map(row_group.column, range(row_group.num_columns))}
    dictionary = {path for path, c in columns.items() if {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(c.encodings)}
    assert "event_type.list.element" in dictionary and "url.list.element" in dictionary
    assert not dictionary & {"ts.list.element", "seconds_since_previous.list.element"}
    assert [path for path, c in columns.items() if c.is_stats_set] == ["client_id"]


def test_vocabulary_keeps_the_most_frequent_values_and_encodes_the_rest_as_oov(tmp_path):
    visits = [
        (1, f"2022-07-0{d} 10:0{i}:00", url)
        for d, i, url in [(2, 0, 5), (2, 1, 5), (2, 2, 6), (3, 0, 6), (3, 1, 7), (3, 2, 5)]
    ]
    source = write_source(tmp_path / "src", {"page_visit": visits, "product_buy": [(1, "2022-07-02 12:00:00", 13)]})
    settings = settings_for(source, tmp_path / "home", FIRST, AS_OF)
    with dg.DagsterInstance.ephemeral() as instance:
        _build(build_definitions(settings), instance, FIRST, AS_OF, AS_OF, top_urls=2)
    folder = settings.artifact_dir / "user_sequences" / AS_OF.isoformat()
    vocab = load_vocabularies(folder / VOCABULARY_FILE)
    assert vocab["url"].values.tolist() == [5, 6]  # 5 seen three times, 6 twice, 7 once (cut)
    assert vocab["category"].values.tolist() == [3]
    assert vocab["url"].encode(np.array([5, 6, 7, 5]), absent=np.array([False, False, False, True])).tolist() == [
        FIRST_VALUE,
        FIRST_VALUE + 1,
        OOV,
        ABSENT,
    ]
    manifest = read_manifest(folder)
    assert manifest["stats"]["vocabulary_sizes"] == {"category": 1, "sku": 1, "url": 2}
    assert pq.read_table(folder / VOCABULARY_FILE).num_rows == 4
    counts = Counter(u for _, _, u in visits)
    assert counts[5] > counts[6] > counts[7]


def test_text_codes_and_user_selection(tmp_path):
    source = _tie_source(tmp_path)
    settings = settings_for(source, tmp_path / "home", FIRST, date(2022, 7, 5), lookback_days=5)
    with dg.DagsterInstance.ephemeral() as instance:
        _build(build_definitions(settings), instance, FIRST, date(2022, 7, 5), AS_OF)
    folder = settings.artifact_dir / "user_sequences" / AS_OF.isoformat()
    with pytest.raises(AttributeError, match="text_fields"):
        load_sequences(folder).name  # noqa: B018 - text is loaded only when asked for
    seqs = load_sequences(folder, text_fields=["query", "name"])
    searches, query = seqs.text_codes("query")
    assert searches.tolist() == np.flatnonzero(seqs.event_type == EVENT_CODE["search_query"]).tolist()
    assert query[:, :2].tolist() == [[3, 4], [9, 0]]
    products, names = seqs.text_codes("name")
    assert products.tolist() == np.flatnonzero(seqs.sku >= 0).tolist()
    assert names[:, 0].tolist() == (seqs.sku[products] - 10).tolist()  # the catalogue names sku 10 + i codes(i)
    picked = seqs.select(np.array([1, 0]))
    assert picked.client_ids.tolist() == seqs.client_ids[[1, 0]].tolist()
    assert picked.lengths.tolist() == seqs.lengths[[1, 0]].tolist()
    first_user = slice(seqs.offsets[1], seqs.offsets[2])
    assert picked.sku[: picked.lengths[0]].tolist() == seqs.sku[first_user].tolist()


@pytest.mark.parametrize("max_events", [1, 128])
def test_every_user_keeps_at_most_max_events(tiny_defs, tiny_settings, instance, max_events):
    _build(
        tiny_defs,
        instance,
        tiny_settings.first_day,
        tiny_settings.last_day,
        tiny_settings.last_day,
        max_events=max_events,
    )
    seqs = load_sequences(tiny_settings.artifact_dir / "user_sequences" / tiny_settings.last_day.isoformat())
    assert seqs.lengths.max() <= max_events
    assert np.array_equal(seqs.lengths, np.minimum(seqs.n_events, max_events))


def test_packing_orders_events_sharing_a_timestamp_as_a_full_sort_would():
    """The SQL sorts by (client_id, ts) only; the packer must give ties the order of the full key (event type, sku,
    url, query, nulls last) whatever order they arrive in, take the catalogue fields by catalogue_row and cut the
    oldest events, ties included."""
    t0, t1 = datetime(2022, 7, 2, 10), datetime(2022, 7, 2, 11)
    # (client, event_type, ts, sku, url, query, catalogue_row): client 1's four events at t0 arrive shuffled
    rows = [
        (1, 4, t0, None, None, "[ 2 ]", None),
        (1, 0, t0, 7, None, None, 1),
        (1, 4, t0, None, None, "[ 1 ]", None),
        (1, 0, t0, 5, None, None, 0),
        (1, 3, t1, None, 9, None, None),
        (2, 3, t0, None, 8, None, None),
        (2, 3, t0, None, 6, None, None),
    ]
    types = (pa.int64(), pa.uint8(), pa.timestamp("us"), pa.int64(), pa.int64(), pa.string(), pa.int32())
    events = pa.table(
        [pa.array(values, t) for values, t in zip(zip(*rows, strict=True), types, strict=True)], names=SELECTED_COLUMNS
    )
    catalogue = {
        "category": pa.array([50, 70]),
        "price": pa.array([1, 2], pa.uint8()),
        "name": pa.array(["five", "seven"]),
    }
    packed = pack_sequences(events, catalogue, max_events=4).to_pylist()
    first, second = packed
    assert (first["client_id"], first["n_events"], second["n_events"]) == (1, 5, 2)
    # full order of client 1: sku 5, sku 7 (type 0), query "[ 1 ]", "[ 2 ]" (type 4) at t0, then the visit at t1;
    # the oldest (sku 5) is cut
    assert first["event_type"] == [0, 4, 4, 3]
    assert first["sku"] == [7, None, None, None] and first["category"] == [70, None, None, None]
    assert first["query"] == [None, "[ 1 ]", "[ 2 ]", None] and first["name"] == ["seven", None, None, None]
    assert first["seconds_since_previous"] == [0, 0, 0, 3600]
    assert second["url"] == [6, 8] and second["seconds_since_previous"] == [None, 0]


def test_batches_of_any_size_give_the_same_file(tiny_warehouse, tmp_path):
    """Users are never split across the batches the SQL result is streamed in, however small they are."""
    spec = SequenceSpec(as_of=TRAIN_DAY, first_day=TINY.start, max_events=16)
    with connect_warehouse(tiny_warehouse, read_only=True) as con:
        build_sequences(con, spec, tmp_path / "default")
        build_sequences(con, spec, tmp_path / "small", batch_rows=7)
    assert pq.read_table(tmp_path / "small" / SEQUENCES_FILE).equals(
        pq.read_table(tmp_path / "default" / SEQUENCES_FILE)
    )
