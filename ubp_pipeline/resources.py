"""Dagster resources: thin configurable handles over the core's warehouse, artifact folders, source and torch device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb

from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.source_layout import SourceLayout

if TYPE_CHECKING:
    from ubp_pipeline.core.common.device import TorchRuntime

DUCKDB_POOL = "duckdb"  # one writer at a time: dagster_home/dagster.yaml limits this pool to 1
# Steps that train a neural model: on Kubernetes (k8s_job_executor) their pod asks for a GPU, on Celery they go to
# the "gpu" queue; on one machine these tags change nothing.
GPU_STEP_TAGS = {
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
    "dagster-celery/queue": "gpu",
}
# a step that hits a transient failure (a lock held too long, a full disk freed later) is run again
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)


class Warehouse(dg.ConfigurableResource):
    """The DuckDB file with the catalogue, raw events and quarantine."""

    path: str
    threads: int = 0
    memory_limit: str = ""

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect_warehouse(
            self.path, read_only=read_only, threads=self.threads, memory_limit=self.memory_limit
        ) as con:
            yield con


class ArtifactStore(dg.ConfigurableResource):
    """Folders for files the assets write (sequences, models, profiles); one folder per asset and partition."""

    root: str

    def asset_dir(self, asset: str) -> Path:
        return Path(self.root) / asset

    def partition_dir(self, asset: str, partition_key: str) -> Path:
        return self.asset_dir(asset) / partition_key


class EventSource(dg.ConfigurableResource):
    """The source directory in the challenge layout (one parquet file or folder per table)."""

    directory: str

    def layout(self) -> SourceLayout:
        return SourceLayout(Path(self.directory))


class TorchDevice(dg.ConfigurableResource):
    """Where training runs: cuda when present, else mps, else cpu (or a forced choice), seeded, bf16 on GPU."""

    preference: str = "auto"
    seed: int = 0
    threads: int = 0
    mixed_precision: bool = True

    def runtime(self) -> TorchRuntime:
        # torch is imported here, not at module load: the webserver imports this module and never trains
        from ubp_pipeline.core.common.device import make_runtime

        return make_runtime(self.preference, seed=self.seed, threads=self.threads, mixed_precision=self.mixed_precision)
