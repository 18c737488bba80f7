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
    # auto = the official probe (2048 wide), on every user on a GPU and on `sample_users` of them on a CPU; quick = a
    # 256-wide MLP, labelled, which does not rank rows as the official probe does (bench/results/probe.md)
    probe: Literal["auto", "official", "quick"] = "auto"
    sample_users: int = -1  # users probed: -1 = all on a GPU, 1,500 on a CPU (sampled, seeded); 0 = all
    # also probe each block alone (6 more official probes per block); None: on a GPU yes, on a CPU no
    score_blocks: bool | None = None
    # forward selection of blocks (needs score_blocks), applied to profiles from D + 28 on; by default only with the
    # official probe: on a 4,000-user set the quick probe chose `statistics` alone, 0.09 below the full ensemble
    # beyond noise by the official probe (bench/results/probe.md)
    select_blocks: Literal["with_official_probe", "always", "never"] = "with_official_probe"
    probe_seeds: int = 1  # > 1: every probe is retrained per seed and the intervals cover the probe's noise too
    bootstrap_replicates: int = 200  # draws of the scoring window's users per probe seed
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
        baseline and (synthetic data) the planted-truth oracle, every score with its 95 % interval and a flag where
        it differs from the ensemble beyond noise: a table, per-task metadata and a chart.

        It also chooses blocks by forward selection and writes selection.json: universal_profiles of days from D + 28
        on read it (this day's own profile and numbers never do). Every block's embeddings of the day are read (they
        are upstream of universal_profiles), so the selection may pick a block the profile left out."""
        from ubp_pipeline.assets.embedders import embeddings_key
        from ubp_pipeline.core.evaluation.backtest import ENSEMBLE, TOTAL, NoiseSettings, run_backtest, score_markdown
        from ubp_pipeline.core.evaluation.selection import trials_markdown
        from ubp_pipeline.core.profiles.blocks import excluded_reason
        from ubp_pipeline.data.synthetic import planted_features

        day = partition_day(context.partition_key)
        runtime = torch_device.runtime()
        block_dirs = [artifacts.partition_dir(embeddings_key(name), context.partition_key) for name in settings.blocks]
        with no_retry_for_bad_input(), warehouse.connect() as con:
            backtest = run_backtest(
                con,
                day,
                artifacts.partition_dir(UNIVERSAL_PROFILES, context.partition_key),
                artifacts.partition_dir(DOWNSTREAM_TARGETS, context.partition_key),
                runtime,
                artifacts.partition_dir(PROFILE_EVALUATION, context.partition_key),
                block_dirs=[folder for folder in block_dirs if folder.exists() and not excluded_reason(folder)],
                probe=config.probe,
                sample_users=None if config.sample_users < 0 else config.sample_users,
                score_blocks=config.score_blocks if config.score_blocks is not None else runtime.device.type == "cuda",
                select=config.select_blocks == "always"
                or (config.select_blocks == "with_official_probe" and config.probe != "quick"),
                noise=NoiseSettings(replicates=config.bootstrap_replicates, probe_seeds=config.probe_seeds),
                allow_leakage=config.allow_models_trained_after_day,
                oracle=lambda clients: planted_features(source.directory, day, clients),
                log=context.log.info,
            )
        if backtest.leaking_blocks:
            context.log.warning(f"LEAKAGE ACCEPTED: {backtest.leaking_blocks} were trained after {day}")
        scores = backtest.scores.set_index(["row", "task"])
        totals = scores.xs(TOTAL, level="task")
        ensemble = scores.xs(ENSEMBLE, level="row").drop(index=TOTAL)
        selection = backtest.selection
        chart = base64.b64encode(backtest.chart.read_bytes()).decode()
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(backtest.folder)),
                "scores": dg.MetadataValue.md(score_markdown(backtest.scores)),
                "chart": dg.MetadataValue.md(f"![scores](data:image/png;base64,{chart})"),
                "probe": backtest.probe,
                "models_trained_after_day": dg.MetadataValue.json(backtest.leaking_blocks),
                **{
                    f"{row}_total{suffix}": float(totals.loc[row, column])
                    for row in totals.index
                    for suffix, column in (("", "score"), ("_lower", "score_lower"), ("_upper", "score_upper"))
                },
                **{f"{row}_total_beyond_noise": bool(totals.loc[row, "beyond_noise"]) for row in totals.index},
                **{
                    f"ensemble_{task}{suffix}": float(ensemble.loc[task, column])
                    for task in ensemble.index
                    for suffix, column in (("", "score"), ("_lower", "score_lower"), ("_upper", "score_upper"))
                },
                **(
                    {
                        "selected_blocks": dg.MetadataValue.json(selection["blocks"]),
                        "selection_evidence": dg.MetadataValue.md(trials_markdown(selection["trials"])),
                        "selection_for_profiles_from": selection["evidence_until"],
                    }
                    if selection
                    else {}
                ),
            }
        )

    return [downstream_targets, profile_evaluation]
