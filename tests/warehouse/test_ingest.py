"""Ingest through real Dagster runs into a real DuckDB file: partitions, backfills, idempotence and bad input."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from datetime import date

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from tests.factories import codes, event_frame, settings_for, write_source, write_table
from ubp_pipeline.core.warehouse import ingest as ingest_module
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.ingest import ReconciliationError, ingest_event_tables, ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceError, SourceLayout
from ubp_pipeline.definitions import build_definitions, default_resources
from ubp_pipeline.runner import materialize
from ubp_pipeline.settings import Settings

DAY1, DAY2, DAY3 = date(2022, 7, 1), date(2022, 7, 2), date(2022, 7, 3)


def _count(settings, sql: str, params=()) -> int:
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        return con.execute(sql, list(params)).fetchone()[0]


def _events_per_day(settings, event_type: str) -> dict[str, int]:
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        rows = con.execute(
            "SELECT event_date, count(*) FROM events WHERE event_type = ? GROUP BY 1", [event_type]
        ).fetchall()
    return {str(day): n for day, n in rows}


def _materialized_partitions(instance, key: str) -> set[str]:
    return instance.get_materialized_partitions(dg.AssetKey(key))


def test_one_partition_loads_exactly_that_day(tiny_defs, tiny_settings, instance):
    day = date(2022, 6, 30)
    result = materialize(tiny_defs, "group:ingest", instance, partition=day)
    assert result.success
    per_day = _events_per_day(tiny_settings, "page_visit")
    assert list(per_day) == [str(day)] and per_day[str(day)] > 0
    assert _materialized_partitions(instance, "raw_page_visit") == {str(day)}


def test_range_backfill_is_one_run_and_covers_every_day(tiny_defs, tiny_settings, instance, tiny_source):
    result = materialize(tiny_defs, "group:ingest", instance, partition_range=(tiny_settings.first_day, tiny_settings.last_day))
    assert result.success
    assert len(instance.get_run_records()) == 1
    all_days = set(tiny_defs.resolve_job_def("ingest_job").partitions_def.get_partition_keys())
    for key in ("raw_product_buy", "raw_page_visit", "raw_search_query"):
        assert _materialized_partitions(instance, key) == all_days
    source_rows = pd.read_parquet(tiny_source / "page_visit.parquet")
    quarantined = _count(tiny_settings, "SELECT count(*) FROM quarantine WHERE source = 'page_visit'")
    stored = _count(tiny_settings, "SELECT count(*) FROM events WHERE event_type = 'page_visit'")
    assert stored + quarantined == len(source_rows)
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile"]
    assert len(checks) == 6 and all(check.passed for check in checks)  # five event tables + the catalogue


def test_rerunning_a_day_replaces_it_and_leaves_other_days_alone(tiny_defs, tiny_settings, instance):
    materialize(tiny_defs, "group:ingest", instance, partition_range=(date(2022, 6, 28), date(2022, 6, 30)))
    before = _events_per_day(tiny_settings, "add_to_cart")
    materialize(tiny_defs, "group:ingest", instance, partition=date(2022, 6, 29))
    materialize(tiny_defs, "group:ingest", instance, partition=date(2022, 6, 29))
    assert _events_per_day(tiny_settings, "add_to_cart") == before
    assert sum(before.values()) > 0


def test_a_folder_of_daily_files_is_one_source(tmp_path):
    source = write_source(tmp_path / "src")
    (source / "page_visit.parquet").unlink()
    day_rows = {DAY1: [(1, "2022-07-01 10:00:00", 5)], DAY2: [(1, "2022-07-02 10:00:00", 6), (2, "2022-07-02 11:00:00", 7)]}
    for day, rows in day_rows.items():
        write_table(source / "page_visit", f"part-{day}", event_frame("page_visit", rows))
    settings = settings_for(source, tmp_path / "home", DAY1, DAY2)
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(build_definitions(settings), "group:ingest", instance, partition_range=(DAY1, DAY2)).success
    assert _events_per_day(settings, "page_visit") == {"2022-07-01": 1, "2022-07-02": 2}


def _bad_rows_source(tmp_path):
    """Every kind of bad row next to good ones; timestamps as strings so one can be unreadable."""
    source = write_source(
        tmp_path / "src",
        {
            "product_buy": [
                (1, "2022-07-01 10:00:00", 10),
                (1, "2022-07-01 10:00:00", 10),  # exact duplicate
                (2, "2022-07-01 11:00:00", 999),  # sku unknown to product_properties
                (None, "2022-07-01 12:00:00", 11),  # null client
            ],
            "search_query": [(1, "2022-07-01 09:00:00", codes(1, 2)), (2, "2022-07-01 09:30:00", "[1 2 3]")],
        },
    )
    visits = pa.table(
        {
            "client_id": pa.array([1, 2, 3], pa.int64()),
            "timestamp": pa.array(["2022-07-01 08:00:00", "not a time", "2022-07-01 08:05:00"]),
            "url": pa.array([100, 101, None], pa.int64()),
        }
    )
    write_table(source, "page_visit", visits)
    return source


def test_bad_rows_are_quarantined_with_a_reason_and_counts_reconcile(tmp_path):
    source = _bad_rows_source(tmp_path)
    settings = settings_for(source, tmp_path / "home", DAY1, DAY1)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(build_definitions(settings), "group:ingest", instance, partition=DAY1)
    assert result.success
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        reasons = dict(con.execute("SELECT source || ':' || reason, count(*) FROM quarantine GROUP BY 1").fetchall())
        accepted = dict(con.execute("SELECT event_type::VARCHAR, count(*) FROM events GROUP BY 1").fetchall())
    assert reasons == {
        "product_buy:duplicate": 1,
        "product_buy:unknown_sku": 1,
        "product_buy:null_client_id": 1,
        "search_query:malformed_query": 1,
        "page_visit:unparseable_timestamp": 1,
        "page_visit:null_url": 1,
    }
    assert accepted == {"product_buy": 1, "search_query": 1, "page_visit": 1}
    metadata = {
        mat.asset_key.to_user_string(): mat.metadata for mat in result.asset_materializations_for_node("raw_events")
    }
    buys = metadata["raw_product_buy"]
    assert (buys["read_rows"].value, buys["accepted_rows"].value, buys["quarantined_rows"].value) == (4, 1, 3)
    warnings = [e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_share" and not e.passed]
    assert {e.asset_key.to_user_string() for e in warnings} == {"raw_product_buy", "raw_search_query", "raw_page_visit"}


def test_reingesting_bad_rows_does_not_duplicate_the_quarantine(tmp_path):
    source = _bad_rows_source(tmp_path)
    settings = settings_for(source, tmp_path / "home", DAY1, DAY1)
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(defs, "group:ingest", instance, partition=DAY1)
        first = _count(settings, "SELECT count(*) FROM quarantine")
        materialize(defs, "group:ingest", instance, partition=DAY1)
    assert _count(settings, "SELECT count(*) FROM quarantine") == first == 6


def test_only_later_copies_of_an_event_are_refused_as_duplicates_in_file_order(tmp_path):
    """The first copy (by file name, then row) is kept wherever the copies lie; a copy of a refused row keeps its own
    reason; events that share a client and time but differ in payload are not duplicates."""
    source = write_source(tmp_path / "src")
    buys = {
        "part-a": [(1, "2022-07-01 10:00:00", 10), (1, "2022-07-01 10:00:00", 11), (2, "2022-07-01 11:00:00", 999)],
        "part-b": [(1, "2022-07-01 10:00:00", 10), (1, "2022-07-01 10:00:00", 10), (2, "2022-07-01 11:00:00", 999)],
    }
    (source / "product_buy.parquet").unlink()
    for name, rows in buys.items():
        write_table(source / "product_buy", name, event_frame("product_buy", rows))
    with connect_warehouse(tmp_path / "w.duckdb") as con:
        ingest_product_properties(con, SourceLayout(source))
        (report,) = ingest_event_tables(con, SourceLayout(source), ["product_buy"], DAY1, DAY1).values()
        refused = con.execute(
            "SELECT regexp_extract(source_file, 'part-.'), source_row, reason FROM quarantine ORDER BY ALL"
        ).fetchall()
        kept = con.execute("SELECT client_id, sku FROM events ORDER BY ALL").fetchall()
    assert refused == [
        ("part-a", 2, "unknown_sku"),
        ("part-b", 0, "duplicate"),
        ("part-b", 1, "duplicate"),
        ("part-b", 2, "unknown_sku"),
    ]
    assert kept == [(1, 10), (1, 11)]
    assert (report.read_rows, report.accepted_rows, report.quarantined_rows) == (6, 2, 4)


def test_bad_catalogue_rows_are_quarantined(tmp_path):
    catalogue = pd.DataFrame(
        {"sku": [10, 10, 11, 12], "category": [1, 1, 1, 2], "price": [5, 5, 150, 7], "name": [codes(1), codes(1), codes(2), "oops"]}
    )
    source = write_source(tmp_path / "src", catalogue=catalogue)
    with connect_warehouse(tmp_path / "w.duckdb") as con:
        report = ingest_product_properties(con, SourceLayout(source))
    assert report.quarantined_by_reason == {"duplicate_sku": 1, "price_out_of_range": 1, "malformed_name": 1}
    assert (report.read_rows, report.accepted_rows) == (4, 1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda src: (src / "product_buy.parquet").unlink(), "product_buy: neither"),
        (
            lambda src: write_table(src, "product_buy", pd.DataFrame({"client_id": [1], "timestamp": ["2022-07-01"]})),
            "product_buy: file {src}/product_buy.parquet has no column 'sku'",
        ),
        (
            lambda src: write_table(
                src, "product_buy", pd.DataFrame({"client_id": [1], "timestamp": ["2022-07-01"], "sku": ["ten"]})
            ),
            "product_buy: file {src}/product_buy.parquet, column 'sku' has type .*string, expected integer",
        ),
        (
            lambda src: (src / "product_buy.parquet").write_text("not parquet"),
            "product_buy: file {src}/product_buy.parquet is not a readable parquet file",
        ),
    ],
)
def test_a_broken_source_fails_with_the_file_and_column_named(tmp_path, damage, message):
    source = write_source(tmp_path / "src", {"product_buy": [(1, "2022-07-01 10:00:00", 10)]})
    damage(source)
    with connect_warehouse(tmp_path / "w.duckdb") as con:
        ingest_product_properties(con, SourceLayout(source))
        with pytest.raises(SourceError, match=message.format(src=source)):
            ingest_event_tables(con, SourceLayout(source), ["product_buy"], DAY1, DAY1)


def test_a_write_that_does_not_reconcile_is_rolled_back(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", {"add_to_cart": [(1, "2022-07-01 10:00:00", 10), (2, "2022-07-01 10:00:00", 11)]})
    layout = SourceLayout(source)
    with connect_warehouse(tmp_path / "w.duckdb") as con:
        ingest_product_properties(con, layout)
        ingest_event_tables(con, layout, ["add_to_cart"], DAY1, DAY1)
        write_table(source, "add_to_cart", event_frame("add_to_cart", [(3, "2022-07-01 12:00:00", 12)]))
        real_run_sql = ingest_module.run_sql

        def losing_a_row(con_, name, **params):
            result = real_run_sql(con_, name, **params)
            if name == "warehouse/replace_event_days":
                con_.execute("DELETE FROM events WHERE client_id = 3")  # a write that silently lost a row
            return result

        monkeypatch.setattr(ingest_module, "run_sql", losing_a_row)
        with pytest.raises(ReconciliationError, match="read 1 rows but stored 0 accepted"):
            ingest_event_tables(con, layout, ["add_to_cart"], DAY1, DAY1)
        kept = con.execute("SELECT list(client_id ORDER BY client_id) FROM events").fetchone()[0]
    assert kept == [1, 2]  # the previous version of the day survives


def test_failed_reconciliation_fails_the_blocking_check_and_stops_downstream(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", {"add_to_cart": [(1, "2022-07-01 10:00:00", 10)]})
    settings = settings_for(source, tmp_path / "home", DAY1, DAY1)

    real_require = ingest_module._require_reconciled

    def cart_rows_go_missing(table, counts):
        if table == "add_to_cart":
            counts = dataclasses.replace(counts, accepted_rows=counts.accepted_rows - 1)
        real_require(table, counts)

    monkeypatch.setattr(ingest_module, "_require_reconciled", cart_rows_go_missing)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(build_definitions(settings), "*user_sequences", instance, partition=DAY1, raise_on_error=False)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile" and not e.passed]
    assert [e.asset_key.to_user_string() for e in failed] == ["raw_add_to_cart"]
    assert (failed[0].metadata["read_rows"].value, failed[0].metadata["accepted_rows"].value) == (1, 0)
    assert not (settings.artifact_dir / "user_sequences").exists()


def test_the_reconcile_check_recounts_the_committed_warehouse(tmp_path, monkeypatch):
    """The blocking check judges the tables as committed, not the counts the write verified: rows lost after the
    write's own verification fail it, and nothing downstream is built on them."""
    source = write_source(tmp_path / "src", {"add_to_cart": [(1, "2022-07-01 10:00:00", 10)]})
    settings = settings_for(source, tmp_path / "home", DAY1, DAY1)
    real_transaction = ingest_module.transaction

    @contextmanager
    def cart_rows_lost_after_commit(con):
        with real_transaction(con):
            yield con
        con.execute("DELETE FROM events WHERE event_type = 'add_to_cart'")

    monkeypatch.setattr(ingest_module, "transaction", cart_rows_lost_after_commit)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(build_definitions(settings), "*user_sequences", instance, partition=DAY1, raise_on_error=False)
        assert instance.get_materialized_partitions(dg.AssetKey("raw_add_to_cart")) == {str(DAY1)}  # it did commit
        assert not instance.get_materialized_partitions(dg.AssetKey("user_sequences"))
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_reconcile" and not e.passed]
    assert [e.asset_key.to_user_string() for e in failed] == ["raw_add_to_cart"]
    assert (failed[0].metadata["read_rows"].value, failed[0].metadata["accepted_rows"].value) == (1, 0)
    assert not (settings.artifact_dir / "user_sequences").exists()


def _memory_limit_gib(con) -> float:
    value, unit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0].split()
    return float(value) * {"KiB": 2**-20, "MiB": 2**-10, "GiB": 1, "TiB": 2**10}[unit]


def test_the_warehouse_memory_is_capped_unless_a_limit_is_given(tmp_path):
    """Uncapped, DuckDB takes 80 % of the machine: ingest at challenge scale then held 19.5 GiB."""
    with connect_warehouse(tmp_path / "capped.duckdb") as con:
        assert 0 < _memory_limit_gib(con) <= 8
    with connect_warehouse(tmp_path / "given.duckdb", memory_limit="1GiB") as con:
        assert _memory_limit_gib(con) == 1
    env = {"UBP_SOURCE_DIR": str(tmp_path / "source"), "UBP_HOME": str(tmp_path), "UBP_WAREHOUSE_MEMORY": "512MiB"}
    env |= {"UBP_FIRST_DAY": "2022-06-23", "UBP_LAST_DAY": "2022-07-13"}
    with default_resources(Settings.from_env(env))["warehouse"].connect() as con:
        assert _memory_limit_gib(con) == 0.5
