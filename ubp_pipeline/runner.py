"""Materialize assets from Python (the CLI and the tests): one partition, or a range as a single run."""

from datetime import date

import dagster as dg

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def materialize(
    defs: dg.Definitions,
    selection: str | list[str],
    instance: dg.DagsterInstance,
    *,
    partition: date | None = None,
    partition_range: tuple[date, date] | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
    log_level: str = "INFO",
) -> dg.ExecuteInProcessResult:
    """Run the selected assets with the definitions' resources; a range becomes one run (single-run backfill)."""
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})}
    tags = {}
    if partition_range is not None:
        tags = {RANGE_START_TAG: partition_range[0].isoformat(), RANGE_END_TAG: partition_range[1].isoformat()}
    return dg.materialize(
        assets=list(defs.assets or []),
        resources=defs.resources,
        selection=selection,
        instance=instance,
        partition_key=partition.isoformat() if partition else None,
        tags=tags,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )
