"""Materialize assets from Python (the CLI and the tests): one partition, or a range as a single run.

With the default executor (``in_process``) the run executes in this process (``dagster.materialize``). With any
other executor (``UBP_EXECUTOR=multiprocess``, ``k8s``, ``celery``) the run goes through the instance as
`dagster asset materialize` would: the job is reconstructed from ``ubp_pipeline.definitions`` in each step's process
(so its settings come from the environment, as the CLI sets them), and the instance must be persistent.
"""

from __future__ import annotations

import os
import socket
from datetime import date

import dagster as dg
from sqlalchemy.exc import DBAPIError

from ubp_pipeline.resources import DUCKDB_POOL

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
# The process that runs a run: should it be killed, the next `ubp` start on this host marks the run failed.
HOST_TAG = "ubp/host"
PID_TAG = "ubp/pid"

RunResult = dg.ExecuteInProcessResult | dg.JobExecutionResult

# Every asset; a run of it through the instance materializes the asset selection it is launched with.
MATERIALIZE_JOB = dg.define_asset_job(
    "materialize_job",
    selection=dg.AssetSelection.all(),
    description="Any selection of assets as `ubp run` launches it when the executor is not in-process.",
)


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
) -> RunResult:
    """Run the selected assets with the definitions' resources; a range becomes one run (single-run backfill)."""
    ensure_pools(instance)
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})}
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    if partition_range is not None:
        tags |= {RANGE_START_TAG: partition_range[0].isoformat(), RANGE_END_TAG: partition_range[1].isoformat()}
    if defs.executor is None or defs.executor.name == dg.in_process_executor.name:
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
    if partition is not None:
        tags[PARTITION_TAG] = partition.isoformat()
    keys = dg.AssetSelection.from_coercible(selection).resolve(defs.resolve_asset_graph())
    result = dg.execute_job(
        dg.reconstructable(materialize_job),
        instance,
        run_config=run_config,
        tags=tags,
        asset_selection=sorted(keys),
        raise_on_error=raise_on_error,
    )
    if raise_on_error and not result.success:
        raise dg.DagsterError(f"run {result.run_id} of {selection} failed (executor {defs.executor.name})")
    return result


def ensure_pools(instance: dg.DagsterInstance) -> None:
    """Create the warehouse pool's limit (the instance's default) before any step claims the pool. Dagster creates it
    at the first claim, and on PostgreSQL two runs claiming it first at the same moment make one run fail: its
    insert loses the race and aborts the transaction that its fallback update then runs in (dagster#33552)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or instance.global_op_concurrency_default_limit is None:
        return
    if DUCKDB_POOL in storage.get_concurrency_keys():
        return
    try:
        storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)
    except DBAPIError:
        if DUCKDB_POOL not in storage.get_concurrency_keys():  # not another process creating it first
            raise


def materialize_job() -> dg.JobDefinition:
    """MATERIALIZE_JOB as the code location resolves it, rebuilt from the module in each process of a run."""
    from ubp_pipeline.definitions import defs

    return defs.resolve_job_def(MATERIALIZE_JOB.name)
