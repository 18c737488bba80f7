"""downstream_targets and profile_evaluation: the daily backtest of the profiles against the next 28 days."""

import base64
from typing import Literal

import dagster as dg

from ubp_pipeline.assets.as_of import warehouse_day_asset
from ubp_pipeline.assets.errors import no_retry_for_bad_input
from ubp_pipeline.assets.ingest import RAW_EVENT_KEYS, product_properties
from ubp_pipeline.assets.profiles import UNIVERSAL_PROFILES
from ubp_pipeline.partitions import partition_day
from ubp_pipeline.resources import ArtifactStore, EventSource, TorchDevice, Warehouse
from ubp_pipeline.settings import Settings

DOWNSTREAM_TARGETS = "downstream_targets"
PROFILE_EVALUATION = "profile_evaluation"
FUTURE_DAYS = 28


class EvaluationConfig(dg.Config):
    probe: Literal["quick", "official"] = "quick"  # quick = the challenge's protocol with a narrower MLP, labelled
    score_blocks: bool = True  # also probe each block alone
    allow_models_trained_after_day: bool = False  # refuse leakage unless explicitly accepted (then flagged)


def evaluation_assets(settings: Settings, daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    future = dg.TimeWindowPartitionMapping(start_offset=1, end_offset=FUTURE_DAYS, allow_nonexistent_upstream_partitions=True)

    @warehouse_day_asset(
        DOWNSTREAM_TARGETS,
        daily,
        deps=[product_properties, dg.AssetDep(RAW_EVENT_KEYS["product_buy"], partition_mapping=future)],
        group_name="evaluation",
        kinds={"duckdb", "parquet"},
    )
    def downstream_targets(context: dg.AssetExecutionContext, warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
        """Purchases in (D, D+14] (the probe's training labels) and (D+14, D+28] (its scoring labels), and who had
        bought by D (the churn population). Only days with a complete 28-day future exist."""
        from ubp_pipeline.core.evaluation.targets import build_targets

        out = artifacts.partition_dir(DOWNSTREAM_TARGETS, context.partition_key)
        with no_retry_for_bad_input(), warehouse.connect() as con:
            targets = build_targets(con, partition_day(context.partition_key), settings.last_day, out)
        windows = targets.purchases.groupby("target_window").size().to_dict()
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out)),
                "purchases_window_1": int(windows.get(1, 0)),
                "purchases_window_2": int(windows.get(2, 0)),
                "past_buyers": len(targets.past_buyers),
            }
        )

    @warehouse_day_asset(
        PROFILE_EVALUATION, daily, deps=[UNIVERSAL_PROFILES, downstream_targets], group_name="evaluation", kinds={"pytorch", "parquet"}
    )
    def profile_evaluation(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        warehouse: Warehouse,
        artifacts: ArtifactStore,
        source: EventSource,
        torch_device: TorchDevice,
    ) -> dg.MaterializeResult:
        """The challenge's probe protocol on every task for the ensemble, each block alone, the aggregated-features
        baseline and (synthetic data) the planted-truth oracle: a table, per-task metadata and a chart."""
        from ubp_pipeline.core.evaluation.backtest import run_backtest, score_markdown, score_table
        from ubp_pipeline.data.synthetic import planted_features

        day = partition_day(context.partition_key)
        with no_retry_for_bad_input(), warehouse.connect() as con:
            backtest = run_backtest(
                con,
                day,
                artifacts.partition_dir(UNIVERSAL_PROFILES, context.partition_key),
                artifacts.partition_dir(DOWNSTREAM_TARGETS, context.partition_key),
                torch_device.runtime(),
                artifacts.partition_dir(PROFILE_EVALUATION, context.partition_key),
                probe=config.probe,
                score_blocks=config.score_blocks,
                allow_leakage=config.allow_models_trained_after_day,
                oracle=lambda clients: planted_features(source.directory, day, clients),
                log=context.log.info,
            )
        if backtest.leaking_blocks:
            context.log.warning(f"LEAKAGE ACCEPTED: {backtest.leaking_blocks} were trained after {day}")
        wide = score_table(backtest.scores)
        chart = base64.b64encode(backtest.chart.read_bytes()).decode()
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(backtest.folder)),
                "scores": dg.MetadataValue.md(score_markdown(backtest.scores)),
                "chart": dg.MetadataValue.md(f"![scores](data:image/png;base64,{chart})"),
                "probe": backtest.probe,
                "models_trained_after_day": dg.MetadataValue.json(backtest.leaking_blocks),
                **{f"{row}_total": float(wide.loc[row, "total"]) for row in wide.index},
                **{f"ensemble_{task}": float(wide.loc["ensemble", task]) for task in wide.columns if task != "total"},
            }
        )

    return [downstream_targets, profile_evaluation]
