"""Load source files into the warehouse: refused rows go to quarantine with a reason, and the counts must reconcile."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
from duckdb import ColumnExpression, ConstantExpression
from duckdb import sqltypes as types

from ubp_pipeline.core.common.sql import run_sql
from ubp_pipeline.core.warehouse.database import transaction
from ubp_pipeline.core.warehouse.events import PAYLOAD_COLUMN
from ubp_pipeline.core.warehouse.source_layout import PRODUCT_PROPERTIES, SourceLayout

SOURCE_VIEW = "source_rows"


class ReconciliationError(RuntimeError):
    """Rows read from the source do not equal rows accepted plus rows quarantined; nothing was written."""

    def __init__(self, table: str, read_rows: int, accepted_rows: int, quarantined_rows: int):
        self.counts = {"read_rows": read_rows, "accepted_rows": accepted_rows, "quarantined_rows": quarantined_rows}
        super().__init__(
            f"{table}: read {read_rows} rows but stored {accepted_rows} accepted + {quarantined_rows} quarantined; "
            "the write was rolled back"
        )


@dataclass
class IngestReport:
    """What one ingest read, kept and refused; ``read_rows == accepted_rows + quarantined_rows`` always holds."""

    table: str
    files: list[str]
    read_rows: int
    accepted_rows: int
    quarantined_rows: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    accepted_by_day: dict[str, int] = field(default_factory=dict)

    @property
    def quarantine_share(self) -> float:
        return self.quarantined_rows / self.read_rows if self.read_rows else 0.0


def _column(name: str, alias: str, sql_type) -> ColumnExpression:
    return ColumnExpression(name).cast(sql_type).alias(alias)


def _null(alias: str, sql_type) -> ConstantExpression:
    return ConstantExpression(None).cast(sql_type).alias(alias)


def _register_source(con: duckdb.DuckDBPyConnection, files: list[Path], columns: list) -> None:
    """Expose the files as the view `source_rows` with uniform column names, plus file name and row number."""
    relation = con.read_parquet([str(f) for f in files], filename=True, file_row_number=True, union_by_name=True)
    relation.select(
        *columns,
        ColumnExpression("filename").alias("source_file"),
        ColumnExpression("file_row_number").alias("source_row"),
    ).create_view(SOURCE_VIEW, replace=True)


# (source column, staged name, type): every event type is staged with all three, NULL where it carries none
_PAYLOADS = (("sku", "sku", types.BIGINT), ("url", "url", types.BIGINT), ("query", "query_text", types.VARCHAR))


def _event_columns(event_type: str) -> list:
    payload = PAYLOAD_COLUMN[event_type]
    return [
        _column("client_id", "client_id", types.BIGINT),
        ColumnExpression("timestamp").alias("ts_raw"),
        *(_column(name, alias, t) if name == payload else _null(alias, t) for name, alias, t in _PAYLOADS),
    ]


def day_window(first_day: date, last_day: date) -> tuple[datetime, datetime]:
    """The half-open timestamp range [first_day 00:00, last_day + 1 00:00) covered by a range of daily partitions."""
    return datetime.combine(first_day, time()), datetime.combine(last_day + timedelta(days=1), time())


def ingest_events(
    con: duckdb.DuckDBPyConnection, source: SourceLayout, event_type: str, first_day: date, last_day: date
) -> IngestReport:
    """Replace the days [first_day, last_day] of one event type with what the source holds for them, in one transaction."""
    files = source.checked_files(event_type)
    _register_source(con, files, _event_columns(event_type))
    window_start, window_end = day_window(first_day, last_day)
    window = {"window_start": window_start, "window_end": window_end}
    days = {"first_day": first_day, "last_day": last_day}
    run_sql(con, "warehouse/stage_events", payload=PAYLOAD_COLUMN[event_type], **window)
    with transaction(con):
        run_sql(con, "warehouse/replace_event_days", event_type=event_type, **days)
        read, accepted, quarantined = run_sql(con, "warehouse/reconcile_event_days", event_type=event_type, **window, **days).fetchone()
        _require_reconciled(event_type, read, accepted, quarantined)
    report = _report(con, event_type, files, "warehouse/staged_event_counts", read, accepted, quarantined)
    con.execute("DROP TABLE staged_events")
    return report


def ingest_product_properties(con: duckdb.DuckDBPyConnection, source: SourceLayout) -> IngestReport:
    """Replace the catalogue with the source's product_properties, refusing bad rows into quarantine."""
    files = source.checked_files(PRODUCT_PROPERTIES)
    _register_source(
        con,
        files,
        [
            _column("sku", "sku", types.BIGINT),
            _column("category", "category", types.BIGINT),
            _column("price", "price", types.BIGINT),
            _column("name", "name_text", types.VARCHAR),
        ],
    )
    run_sql(con, "warehouse/stage_product_properties")
    with transaction(con):
        run_sql(con, "warehouse/replace_product_properties")
        read, accepted, quarantined = run_sql(con, "warehouse/reconcile_product_properties").fetchone()
        _require_reconciled(PRODUCT_PROPERTIES, read, accepted, quarantined)
    report = _report(con, PRODUCT_PROPERTIES, files, "warehouse/staged_product_counts", read, accepted, quarantined)
    con.execute("DROP TABLE staged_products")
    return report


def _require_reconciled(table: str, read: int, accepted: int, quarantined: int) -> None:
    if read != accepted + quarantined:
        raise ReconciliationError(table, read, accepted, quarantined)


def _report(con, table, files, counts_sql, read, accepted, quarantined) -> IngestReport:
    by_reason: dict[str, int] = {}
    by_day: dict[str, int] = {}
    for day, outcome, n in run_sql(con, counts_sql).fetchall():
        if outcome == "accepted":
            by_day[str(day)] = n
        else:
            by_reason[outcome] = by_reason.get(outcome, 0) + n
    return IngestReport(
        table=table,
        files=[str(f) for f in files],
        read_rows=read,
        accepted_rows=accepted,
        quarantined_rows=quarantined,
        quarantined_by_reason=by_reason,
        accepted_by_day=by_day,
    )

