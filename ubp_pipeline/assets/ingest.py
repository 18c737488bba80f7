"""Ingest: the product catalogue and the five raw event tables, one daily partition per event day."""

from collections.abc import Callable, Iterator

import dagster as dg

from ubp_pipeline.assets.errors import no_retry_for_bad_input
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import (
    IngestReport,
    ReconciliationError,
    ingest_events,
    ingest_product_properties,
)
from ubp_pipeline.partitions import partition_day, window_days
from ubp_pipeline.resources import DUCKDB_POOL, TRANSIENT_RETRY, EventSource, Warehouse

MAX_QUARANTINE_SHARE = 0.01  # above this the quarantine check warns: the source is likely broken, not just noisy
RECONCILES = "rows_reconcile"
QUARANTINE_SHARE = "quarantine_share"

PRODUCT_PROPERTIES_KEY = dg.AssetKey("product_properties")
RAW_EVENT_KEYS = {event_type: dg.AssetKey(f"raw_{event_type}") for event_type in EVENT_TYPES}


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


def _ingested(
    key: dg.AssetKey, ingest: Callable[[], IngestReport], extra_metadata: dict | None = None
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Run one ingest and report it; counts that do not reconcile fail the blocking check (the write was rolled back)."""
    try:
        report = ingest()
    except ReconciliationError as error:
        yield dg.AssetCheckResult(asset_key=key, check_name=RECONCILES, passed=False, metadata=error.counts)
        raise
    counts = {
        "read_rows": report.read_rows,
        "accepted_rows": report.accepted_rows,
        "quarantined_rows": report.quarantined_rows,
        "other_runs_rows": report.other_runs_rows,
    }
    yield dg.MaterializeResult(asset_key=key, metadata={**(extra_metadata or {}), **_report_metadata(report)})
    yield dg.AssetCheckResult(asset_key=key, check_name=RECONCILES, passed=report.reconciles, metadata=counts)
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
            description="Every row of the source files read = rows accepted + rows quarantined + rows of other days' "
            "runs; a mismatch rolls the write back.",
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
    with no_retry_for_bad_input(), warehouse.connect() as con:
        yield from _ingested(PRODUCT_PROPERTIES_KEY, lambda: ingest_product_properties(con, source.layout()))


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
        """Replace the selected days of each selected event type with the source's rows for those days."""
        first_day, last_day = window_days(context.partition_time_window)
        configured_days = (partition_day(daily.get_first_partition_key()), partition_day(daily.get_last_partition_key()))
        layout = source.layout()
        with no_retry_for_bad_input(), warehouse.connect() as con:
            for event_type, key in RAW_EVENT_KEYS.items():
                if key not in context.selected_asset_keys:
                    continue
                context.log.info(f"ingesting {event_type} for {first_day}..{last_day}")
                yield from _ingested(
                    key,
                    lambda event_type=event_type: ingest_events(
                        con, layout, event_type, first_day, last_day,
                        configured_days=configured_days, allow_shrink=config.allow_shrink,
                    ),
                    {"first_day": str(first_day), "last_day": str(last_day)},
                )

    return raw_events
