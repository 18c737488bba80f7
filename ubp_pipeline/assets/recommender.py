"""sasrec_model: the sequential recommender over skus, trained on one `user_sequences` day (the training cutoff)."""

from collections.abc import Iterator

import dagster as dg

from ubp_pipeline.assets.sequences import USER_SEQUENCES
from ubp_pipeline.assets.training import ModelTrainingConfig, epoch_logger, training_day
from ubp_pipeline.resources import GPU_STEP_TAGS, ArtifactStore, TorchDevice

SASREC_MODEL = "sasrec_model"
RECOMMENDER_GROUP = "recommender"
BEATS_BASELINES = "sasrec_beats_baselines"


class SASRecModelConfig(ModelTrainingConfig):
    """``training_day`` and ``overrides`` (any SASRec or training field, e.g. {"d_model": 32, "epochs": 5}) as for the
    profile models, plus how product events become item sequences."""

    min_item_count: int = 5  # skus with fewer product events on the training day are left out
    buys_and_carts_only: bool = False  # leave out remove_from_cart events
    collapse_repeats: bool = True  # consecutive events on the same sku count once (cart then buy = one interest)
    price_bands: int = 10  # the price bucket 0-99 banded into this many ranges for the annotations (price:90-99)
    min_users: int = 200  # fewer users with 3+ items: no model is trained, and the recommender assets are skipped


@dg.asset(
    name=SASREC_MODEL,
    deps=[dg.AssetDep(USER_SEQUENCES, partition_mapping=dg.LastPartitionMapping())],
    group_name=RECOMMENDER_GROUP,
    kinds={"pytorch", "safetensors"},
    code_version="2",
    output_required=False,
    op_tags=GPU_STEP_TAGS,
    check_specs=[
        dg.AssetCheckSpec(
            BEATS_BASELINES,
            asset=SASREC_MODEL,
            description="SASRec ranks validation users better than popularity and item-to-item transitions; "
            "whatever the outcome, `ubp recommend` serves the model (or blend) that ranks them best",
        )
    ],
)
def sasrec_model(
    context: dg.AssetExecutionContext, config: SASRecModelConfig, artifacts: ArtifactStore, torch_device: TorchDevice
) -> Iterator[dg.MaterializeResult]:
    """SASRec (causal transformer, full-softmax cross-entropy) over each user's skus of product events on one
    `user_sequences` day, with the item vocabulary and each sku's category and price band. Scored by leave-one-out
    full ranking (each user's last sku among all skus, seen ones filtered) next to popularity and item-to-item
    transitions on the same split, and a blend of SASRec with item-to-item; the best on validation is served."""
    import pandas as pd

    from ubp_pipeline.core.common.markdown_tables import markdown_table
    from ubp_pipeline.core.recommender.sku_sequences import SkuSequenceOptions
    from ubp_pipeline.core.recommender.stages import NotEnoughData, fit_recommender

    day = training_day(context, config, USER_SEQUENCES)
    runtime = torch_device.runtime()
    context.log.info(f"training SASRec on {USER_SEQUENCES} {day} ({runtime.describe()['device_name']})")
    options = SkuSequenceOptions(
        min_item_count=config.min_item_count,
        buys_and_carts_only=config.buys_and_carts_only,
        collapse_repeats=config.collapse_repeats,
        price_bands=config.price_bands,
    )
    out = artifacts.asset_dir(SASREC_MODEL)
    try:
        fit = fit_recommender(
            artifacts.partition_dir(USER_SEQUENCES, day),
            out,
            runtime,
            training_day=day,
            options=options,
            overrides=config.overrides,
            min_users=config.min_users,
            callback=epoch_logger(context, "sasrec"),
        )
    except NotEnoughData as reason:
        context.log.warning(f"no recommender trained, the recommender assets are skipped: {reason}")
        yield dg.AssetCheckResult(
            check_name=BEATS_BASELINES,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"verdict": f"no SASRec trained: {reason}"},
        )
        return
    metrics = fit.metrics
    beats = "beats both baselines" if metrics["sasrec_beats_baselines"] else "does NOT beat the baselines"
    verdict = f"SASRec {beats} on validation; `ubp recommend` serves {metrics['served_model']}, the best there"
    if not metrics["sasrec_beats_baselines"]:
        context.log.warning(verdict)
    yield dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "training_cutoff": day,
            "device": fit.device,
            "verdict": verdict,
            "test_quality": dg.MetadataValue.md(
                markdown_table(fit.quality) + f"\n\n{verdict}. Leave-one-out on {metrics['users']:,} users, full "
                f"ranking over {metrics['items']:,} skus, skus already in the history filtered"
            ),
            "quality": dg.MetadataValue.json(fit.quality.to_dict(orient="records")),
            "training_curve": dg.MetadataValue.md(markdown_table(pd.DataFrame(fit.history))),
            "history": dg.MetadataValue.json(fit.history),
            **metrics,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=BEATS_BASELINES,
                passed=bool(metrics["sasrec_beats_baselines"]),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"verdict": verdict, "served_model": metrics["served_model"]},
            )
        ],
    )
