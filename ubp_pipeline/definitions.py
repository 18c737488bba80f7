"""The single Definitions object of the code location (`dagster dev`, `dagster asset materialize`, tests)."""

from __future__ import annotations

import warnings

import dagster as dg

from ubp_pipeline.assets import automation
from ubp_pipeline.assets.embedders import block_assets
from ubp_pipeline.assets.evaluation import evaluation_assets
from ubp_pipeline.assets.ingest import product_properties, raw_event_assets
from ubp_pipeline.assets.interpretability import sae_dictionary, sae_feature_annotations, steering_report
from ubp_pipeline.assets.profiles import profile_assets
from ubp_pipeline.assets.recommender import sasrec_model
from ubp_pipeline.assets.sequences import sequence_assets
from ubp_pipeline.core.profiles.registry import BLOCKS
from ubp_pipeline.executors import executor_for
from ubp_pipeline.partitions import daily_partitions
from ubp_pipeline.resources import ArtifactStore, EventSource, TorchDevice, Warehouse
from ubp_pipeline.runner import MATERIALIZE_JOB
from ubp_pipeline.settings import Settings


def default_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(path=str(settings.warehouse_path), memory_limit=settings.warehouse_memory),
        "artifacts": ArtifactStore(root=str(settings.artifact_dir)),
        "source": EventSource(directory=str(settings.source_dir)),
        "torch_device": TorchDevice(threads=settings.torch_threads),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    # the lookback/future partition mappings use allow_nonexistent_upstream_partitions, a beta parameter on purpose
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    # daily_refresh_job runs one day at a time and materialize_job what `ubp run` selects (a range of raw days as
    # one run, by tags); the backfill daemon's ranges of raw days go through ingest_job's single-run backfill
    warnings.filterwarnings("ignore", message="Asset job (daily_refresh_job|materialize_job) materializes assets with varying")
    daily = daily_partitions(settings)
    assets = [
        product_properties,
        raw_event_assets(daily),
        *sequence_assets(settings, daily),
        *(asset for name in settings.blocks for asset in block_assets(BLOCKS[name], daily)),
        *profile_assets(settings, daily),
        *evaluation_assets(settings, daily),
        sasrec_model,
        sae_dictionary,
        sae_feature_annotations,
        steering_report,
    ]
    return dg.Definitions(
        assets=assets,
        jobs=[*automation.jobs(), MATERIALIZE_JOB],
        schedules=automation.schedules(daily),
        sensors=[automation.new_source_files_sensor(daily)],
        resources=default_resources(settings),
        executor=executor_for(settings.executor),
    )


defs = build_definitions(Settings.from_env())
