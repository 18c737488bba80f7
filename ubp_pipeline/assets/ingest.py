"""Ingest: the product catalogue and the five raw event tables, one daily partition per event day."""

from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import dagster as dg

from ubp_pipeline.assets.errors import no_retry_for_bad_input
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import (
    IngestReport,
    ReconciliationError,
    RowCounts,
    ingest_event_tables,
    ingest_product_properties,
    recount_event_days,
    recount_product_properties,
)
from ubp_pipeline.core.warehouse.source_layout import PRODUCT_PROPERTIES
from ubp_pipeline.partitions import partition_day, window_days
from ubp_pipeline.resources import DUCKDB_POOL, TRANSIENT_RETRY, EventSource, Warehouse

MAX_QUARANTINE_SHARE = 0.01  # above this the quarantine check warns: the source is likely broken, not just noisy
RECONCILES = "rows_reconcile"
QUARANTINE_SHARE = "quarantine_share"

PRODUCT_PROPERTIES_KEY = dg.AssetKey(PRODUCT_PROPERTIES)
RAW_EVENT_KEYS = {event_type: dg.AssetKey(f"raw_{event_type}") for event_type in EVENT_TYPES}
TABLE_KEYS = {PRODUCT_PROPERTIES: PRODUCT_PROPERTIES_KEY, **RAW_EVENT_KEYS}

Written = TypeVar("Written")


def _report_metadata(report: IngestReport) -> dict:
    return {
        "read_rows": report.read_rows,
        "accepted_rows": report.accepted_rows,
        "quarantined_rows": report.quarantined_rows,
        "quarantined_by_reason": dg.MetadataValue.json(report.quarantined_by_reason),
        "accepted_by_day": dg.MetadataValue.json(report.accepted_by_day),
        "other_runs_rows": report.other_runs_rows,
        "quarantine_share": report.quarantine_share,
        "source_files": dg.MetadataValue.json(report.files[:50]),
        "n_source_files": len(report.files),
    }


def _written(write: Callable[[], Written]) -> Generator[dg.AssetCheckResult, None, Written]:
    """Run a write; counts that do not reconcile inside it (it was rolled back) fail that table's blocking check."""
    try:
        return write()
    except ReconciliationError as error:
        yield dg.AssetCheckResult(
            asset_key=TABLE_KEYS[error.table], check_name=RECONCILES, passed=False, metadata=error.counts
        )
        raise


def _reported(
    key: dg.AssetKey, report: IngestReport, recount: RowCounts, extra_metadata: dict | None = None
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The materialization with the write's counts, and the checks judged on the recount from the committed tables."""
    yield dg.MaterializeResult(asset_key=key, metadata={**(extra_metadata or {}), **_report_metadata(report)})
    counts = recount.as_dict()
    yield dg.AssetCheckResult(asset_key=key, check_name=RECONCILES, passed=recount.reconciles, metadata=counts)
    yield dg.AssetCheckResult(
        asset_key=key,
        check_name=QUARANTINE_SHARE,
        passed=report.quarantine_share <= MAX_QUARANTINE_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantine_share": report.quarantine_share, "max_share": MAX_QUARANTINE_SHARE, **counts},
    )


def _check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            RECONCILES,
            asset=key,
            blocking=True,
            description="Recounted from the committed tables after the write: every row of the source files = rows "
            "accepted + rows quarantined + rows of other days' runs (a write whose own count disagrees is rolled back).",
        ),
        dg.AssetCheckSpec(
            QUARANTINE_SHARE,
            asset=key,
            description=f"Warns when more than {MAX_QUARANTINE_SHARE:.0%} of the rows read were refused.",
        ),
    ]


@dg.asset(
    group_name="ingest",
    kinds={"duckdb"},
    pool=DUCKDB_POOL,
    retry_policy=TRANSIENT_RETRY,
    check_specs=_check_specs(PRODUCT_PROPERTIES_KEY),
)
def product_properties(warehouse: Warehouse, source: EventSource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The catalogue: one row per sku with category, price bucket and name codes; bad rows are quarantined."""
    layout = source.layout()
    with no_retry_for_bad_input(), warehouse.connect() as con:
        report = yield from _written(lambda: ingest_product_properties(con, layout))
        yield from _reported(PRODUCT_PROPERTIES_KEY, report, recount_product_properties(con, layout))


class RawEventsConfig(dg.Config):
    # Replace stored days even when the source now holds far fewer rows for them (a deliberate re-delivery); by
    # default such a run is refused, so an empty or truncated export cannot erase ingested days.
    allow_shrink: bool = False


def raw_event_assets(daily: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """One multi-asset for the five event tables, so a range backfill is one run and one SQL pass per table."""

    @dg.multi_asset(
        name="raw_events",
        specs=[
            dg.AssetSpec(
                key,
                deps=[product_properties],
                group_name="ingest",
                kinds={"duckdb"},
                skippable=True,
                description=f"Accepted `{event_type}` events of the day (table `events`); refused rows are in `quarantine`.",
            )
            for event_type, key in RAW_EVENT_KEYS.items()
        ],
        check_specs=[spec for key in RAW_EVENT_KEYS.values() for spec in _check_specs(key)],
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=True,
        pool=DUCKDB_POOL,
        retry_policy=TRANSIENT_RETRY,
    )
    def raw_events(
        context: dg.AssetExecutionContext, config: RawEventsConfig, warehouse: Warehouse, source: EventSource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Replace the selected days of the selected event tables with the source's rows for those days: every file
        of every table is checked before any is written, and the tables commit together or not at all."""
        first_day, last_day = window_days(context.partition_time_window)
        configured_days = (partition_day(daily.get_first_partition_key()), partition_day(daily.get_last_partition_key()))
        event_types = [event_type for event_type, key in RAW_EVENT_KEYS.items() if key in context.selected_asset_keys]
        layout = source.layout()
        context.log.info(f"ingesting {', '.join(event_types)} for {first_day}..{last_day} in one transaction")
        with no_retry_for_bad_input(), warehouse.connect() as con:
            with _nothing_written_on_failure(event_types):
                reports = yield from _written(
                    lambda: ingest_event_tables(
                        con, layout, event_types, first_day, last_day,
                        configured_days=configured_days, allow_shrink=config.allow_shrink,
                    )
                )
            window = {"first_day": str(first_day), "last_day": str(last_day)}
            for event_type, report in reports.items():
                recount = recount_event_days(con, layout, event_type, first_day, last_day, configured_days=configured_days)
                yield from _reported(RAW_EVENT_KEYS[event_type], report, recount, window)

    return raw_events


@contextmanager
def _nothing_written_on_failure(event_types: Sequence[str]) -> Iterator[None]:
    """The event tables commit together: a failure says that none of them changed, so nobody has to wonder which days
    of which tables are now current."""
    try:
        yield
    except (ValueError, ReconciliationError) as error:
        raise ValueError(
            f"{error}. Nothing was written to {', '.join(event_types)}: the selected event tables commit together, "
            "so each keeps the days it had"
        ) from error
