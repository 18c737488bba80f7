"""Bad input as real deliveries bring it, through real Dagster runs into a real DuckDB file: wild clocks, shrunken
re-deliveries, events before their catalogue, corrupt bytes, impossible skus. Every row is accounted for, or the run
is refused at once with the file and the fix named."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.factories import CATALOGUE, codes, event_frame, settings_for, write_source, write_table
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.ingest import ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceError, SourceLayout
from ubp_pipeline.core.warehouse.source_scan import MAX_DETECTED_DAYS, detect_day_range
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.runner import materialize

DAYS = [date(2022, 7, 1), date(2022, 7, 2), date(2022, 7, 3)]
ALLOW_SHRINK = {"ops": {"raw_events": {"config": {"allow_shrink": True}}}}


def _rows(settings, sql: str) -> list[tuple]:
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        return con.execute(sql).fetchall()


def visits_at(timestamps: list[str]) -> pa.Table:
    """Page visits with string timestamps, so a clock can be wild or unreadable."""
    n = len(timestamps)
    return pa.table({"client_id": pa.array(range(1, n + 1), pa.int64()), "timestamp": timestamps, "url": pa.array(range(n), pa.int64())})


def _materialization(result, key: str) -> dict:
    (materialization,) = [m for m in result.asset_materializations_for_node("raw_events") if m.asset_key.to_user_string() == key]
    return {name: value.value for name, value in materialization.metadata.items()}


def test_rows_outside_the_days_are_quarantined_once_and_reconcile_counts_the_whole_file(tmp_path):
    in_range = [f"{day} 10:00:00" for day in DAYS for _ in range(2)]
    wild = ["1970-01-01 00:00:00", "2100-01-01 00:00:00", "2022-06-30 23:59:59", "not a time"]
    source = write_source(tmp_path / "src")
    write_table(source, "page_visit", visits_at(in_range + wild))
    settings = settings_for(source, tmp_path / "home", DAYS[0], DAYS[-1])
    defs = build_definitions(settings)
    quarantined_per_run = []
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(2):  # every day on its own, twice over: nothing may be counted twice
            for day in DAYS:
                result = materialize(defs, "group:ingest", instance, partition=day)
                visits = _materialization(result, "raw_page_visit")
                assert visits["read_rows"] == len(in_range + wild)  # the whole file, not only the day
                assert visits["accepted_rows"] + visits["quarantined_rows"] + visits["other_runs_rows"] == len(in_range + wild)
                quarantined_per_run.append(visits["quarantined_rows"])
    assert quarantined_per_run == [0, 0, 4] * 2  # the run of the file's newest day owns its unplaced rows
    refused = _rows(settings, "SELECT reason, CAST(event_date AS VARCHAR), source_row FROM quarantine ORDER BY source_row")
    assert refused == [
        ("outside_day_range", "1970-01-01", 6),
        ("outside_day_range", "2100-01-01", 7),
        ("outside_day_range", "2022-06-30", 8),
        ("unparseable_timestamp", None, 9),
    ]
    assert _rows(settings, "SELECT count(*) FROM events") == [(len(in_range),)]


def test_a_folder_file_wholly_outside_the_days_is_quarantined_by_the_nearest_days_run(tmp_path):
    source = write_source(tmp_path / "src")
    (source / "page_visit.parquet").unlink()
    write_table(source / "page_visit", "day-1", visits_at([f"{DAYS[0]} 10:00:00"]))
    write_table(source / "page_visit", "clock-reset", visits_at(["1970-01-01 00:00:00", "1970-01-01 00:00:01"]))
    settings = settings_for(source, tmp_path / "home", DAYS[0], DAYS[-1])
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(build_definitions(settings), "group:ingest", instance, partition_range=(DAYS[0], DAYS[0]))
    assert _materialization(result, "raw_page_visit")["quarantined_rows"] == 2
    assert _rows(settings, "SELECT count(*), min(reason) FROM quarantine WHERE source_file LIKE '%clock-reset%'") == [
        (2, "outside_day_range")
    ]


def test_an_empty_redelivery_is_refused_unless_replacement_is_asked_for(tmp_path):
    rows = [(client, f"{day} 10:00:00", 10) for day in DAYS for client in (1, 2, 3)]
    source = write_source(tmp_path / "src", {"product_buy": rows})
    settings = settings_for(source, tmp_path / "home", DAYS[0], DAYS[-1])
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, "group:ingest", instance, partition_range=(DAYS[0], DAYS[-1])).success
        write_table(source, "product_buy", event_frame("product_buy", rows[3:4]))  # day 2 keeps one of three rows
        with pytest.raises(dg.Failure) as refused:
            materialize(defs, "group:ingest", instance, partition_range=(DAYS[0], DAYS[-1]))
        assert _rows(settings, "SELECT count(*) FROM events") == [(9,)]  # nothing was deleted
        message = refused.value.description
        assert f"{source / 'product_buy.parquet'} would remove ingested rows of 3 day(s)" in message
        assert "2022-07-01 (3 stored, 0 delivered), 2022-07-02 (3 stored, 1 delivered)" in message
        assert "allow_shrink: true" in message
        assert not refused.value.allow_retries

        result = materialize(defs, "group:ingest", instance, partition_range=(DAYS[0], DAYS[-1]), run_config=ALLOW_SHRINK)
    assert result.success
    assert _rows(settings, "SELECT count(*) FROM events") == [(1,)]


def test_events_before_their_catalogue_fail_with_what_to_run_first(tmp_path):
    source = write_source(tmp_path / "src", {"product_buy": [(1, f"{DAYS[0]} 10:00:00", 10)]})
    settings = settings_for(source, tmp_path / "home", DAYS[0], DAYS[-1])
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(dg.Failure, match="no product catalogue yet .* materialize `product_properties` first"):
            materialize(build_definitions(settings), "raw_product_buy", instance, partition=DAYS[0])
    assert _rows(settings, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM quarantine)") == [(0, 0)]


def _corrupt_row_group(path, group: int) -> None:
    """Overwrite bytes inside one row group's data pages, as a bad disk or a cut transfer would."""
    column = pq.ParquetFile(path).metadata.row_group(group).column(0)
    data = bytearray(path.read_bytes())
    start = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size // 2
    data[start : start + 64] = b"\xab" * 64
    path.write_bytes(bytes(data))


def test_a_corrupt_file_fails_at_once_naming_the_file_and_row_group(tmp_path):
    source = write_source(tmp_path / "src")
    n = 60_000
    visits = event_frame("page_visit", [(i, f"{DAYS[0]} 10:00:00", i) for i in range(n)])
    path = source / "page_visit.parquet"
    pq.write_table(pa.Table.from_pandas(visits, preserve_index=False), path, row_group_size=n // 3, compression="snappy")
    _corrupt_row_group(path, 1)
    settings = settings_for(source, tmp_path / "home", DAYS[0], DAYS[-1])
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(build_definitions(settings), "group:ingest", instance, partition=DAYS[0], raise_on_error=False)
    assert not result.success
    events = [event.event_type_value for event in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events  # bad input: no retries
    (failure,) = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert f"page_visit: file {path} is corrupt in row group 1 (of 3), column 'client_id'" in message


def _deliveries(clients_per_day: int) -> dict[str, list[tuple]]:
    payloads = {"page_visit": 5, "search_query": codes(1)}
    return {
        event_type: [(client, f"{day} 10:00:00", payloads.get(event_type, 10)) for day in DAYS for client in range(clients_per_day)]
        for event_type in ("add_to_cart", "product_buy", "page_visit", "search_query")
    }


def _missing_column(path) -> None:
    write_table(path.parent, "page_visit", pd.DataFrame({"client_id": [1], "timestamp": [f"{DAYS[0]} 10:00:00"]}))


def _corrupt_bytes(path) -> None:
    n = 60_000
    visits = event_frame("page_visit", [(i, f"{DAYS[0]} 10:00:00", i) for i in range(n)])
    pq.write_table(pa.Table.from_pandas(visits, preserve_index=False), path, row_group_size=n // 3, compression="snappy")
    _corrupt_row_group(path, 1)


@pytest.mark.parametrize(
    ("damage", "named"),
    [(_missing_column, "has no column 'url'"), (_corrupt_bytes, "is corrupt in row group 1 (of 3)")],
    ids=["schema checked before any table is read", "bytes found bad after earlier tables were written"],
)
def test_a_bad_table_partway_through_a_load_leaves_every_table_as_it_was(tmp_path, damage, named):
    source = write_source(tmp_path / "src", _deliveries(clients_per_day=2))
    settings = settings_for(source, tmp_path / "home", DAYS[0], DAYS[-1])
    defs = build_definitions(settings)
    stored = "SELECT event_type, count(*) FROM events GROUP BY ALL ORDER BY ALL"
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, "group:ingest", instance, partition_range=(DAYS[0], DAYS[-1])).success
        before = _rows(settings, stored)
        for event_type, rows in _deliveries(clients_per_day=3).items():  # page_visit, fourth of five, arrives broken
            write_table(source, event_type, event_frame(event_type, rows))
        damage(source / "page_visit.parquet")
        result = materialize(defs, "group:ingest", instance, partition_range=(DAYS[0], DAYS[-1]), raise_on_error=False)
    assert not result.success
    assert dict(_rows(settings, stored)) == dict(before) == dict.fromkeys(_deliveries(clients_per_day=2), 6)
    assert result.asset_materializations_for_node("raw_events") == []
    (failure,) = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"page_visit: file {source / 'page_visit.parquet'} {named}")
    assert message.endswith(
        "Nothing was written to add_to_cart, remove_from_cart, product_buy, page_visit, search_query: the selected "
        "event tables commit together, so each keeps the days it had"
    )


def test_a_negative_sku_is_quarantined_from_the_catalogue(tmp_path):
    catalogue = pd.concat([CATALOGUE, pd.DataFrame({"sku": [-5], "category": [1], "price": [5], "name": [codes(9)]})])
    source = write_source(tmp_path / "src", catalogue=catalogue)
    with connect_warehouse(tmp_path / "w.duckdb") as con:
        report = ingest_product_properties(con, SourceLayout(source))
        assert con.execute("SELECT min(sku) FROM product_properties").fetchall() == [(10,)]
    assert report.quarantined_by_reason == {"negative_sku": 1}


def _spread_source(tmp_path, timestamps: list[str]):
    source = write_source(tmp_path / "src")
    write_table(source, "page_visit", visits_at(timestamps))
    return source


def test_day_range_detection_leaves_out_a_few_rows_with_a_wild_clock(tmp_path):
    bulk = [f"{date(2022, 6, 1) + timedelta(days=i % 40)} 12:00:00" for i in range(2_000)]
    wild = ["1970-01-01 00:00:00"] * 5 + ["2100-01-01 00:00:00"] * 5
    detected = detect_day_range(SourceLayout(_spread_source(tmp_path, wild[:5] + bulk + wild[5:])))
    assert (detected.first_day, detected.last_day) == (date(2022, 6, 1), date(2022, 7, 10))
    assert detected.outside_rows == 10
    assert detected.outside_examples[0] == "page_visit.parquet row 0: 1970-01-01 00:00:00"
    assert detected.outside_examples[-1] == "page_visit.parquet row 2009: 2100-01-01 00:00:00"


def test_a_detected_range_too_long_to_plan_is_refused_naming_the_rows_and_the_override(tmp_path):
    years = [f"{2000 + i // 100}-01-01 00:00:00" for i in range(2_000)]  # 20 stretches of 5 % each, a year apart
    with pytest.raises(SourceError) as refused:
        detect_day_range(SourceLayout(_spread_source(tmp_path, years)))
    message = str(refused.value)
    assert f"more than {MAX_DETECTED_DAYS:,} daily partitions" in message
    assert "page_visit.parquet row 1999: 2019-01-01 00:00:00" in message
    assert "set UBP_FIRST_DAY and UBP_LAST_DAY" in message
