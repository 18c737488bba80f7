"""The single Definitions object of the code location (`dagster dev`, `dagster asset materialize`, tests)."""

from __future__ import annotations

import warnings

import dagster as dg

from ubp_pipeline.assets.embedders import block_assets
from ubp_pipeline.assets.evaluation import evaluation_assets
from ubp_pipeline.assets.features import feature_assets
from ubp_pipeline.assets.ingest import product_properties, raw_event_assets
from ubp_pipeline.assets.profiles import profile_assets
from ubp_pipeline.assets.sequences import sequence_assets
from ubp_pipeline.core.block_registry import BLOCKS
from ubp_pipeline.partitions import daily_partitions
from ubp_pipeline.resources import ArtifactStore, EventSource, TorchDevice, Warehouse
from ubp_pipeline.settings import Settings


def default_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": Warehouse(path=str(settings.warehouse_path)),
        "artifacts": ArtifactStore(root=str(settings.artifact_dir)),
        "source": EventSource(directory=str(settings.source_dir)),
        "torch_device": TorchDevice(threads=settings.torch_threads),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    # the lookback/future partition mappings use allow_nonexistent_upstream_partitions, a beta parameter on purpose
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    daily = daily_partitions(settings)
    assets = [
        product_properties,
        raw_event_assets(daily),
        *sequence_assets(settings, daily),
        *feature_assets(settings, daily),
        *(asset for spec in BLOCKS.values() for asset in block_assets(spec, daily)),
        *profile_assets(daily),
        *evaluation_assets(settings, daily),
    ]
    ingest_job = dg.define_asset_job(
        "ingest_job",
        selection=dg.AssetSelection.groups("ingest"),
        description="Load the catalogue and the selected days of raw events (a range is one run).",
    )
    return dg.Definitions(
        assets=assets,
        jobs=[ingest_job],
        resources=default_resources(settings),
        # steps share one process: a fresh interpreter per step would re-import torch for every asset
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())
