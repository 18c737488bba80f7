"""sae_dictionary -> sae_feature_annotations -> steering_report: reading and steering the recommender's hidden states.

All three read the sequences `sasrec_model` was trained on (its training day's `user_sequences` partition, over its
item vocabulary), so every figure describes the model on its own training data.
"""

from typing import Any, Literal

import dagster as dg

from ubp_pipeline.assets.recommender import RECOMMENDER_GROUP, SASREC_MODEL, sasrec_model
from ubp_pipeline.assets.sequences import USER_SEQUENCES
from ubp_pipeline.assets.training import epoch_logger
from ubp_pipeline.resources import GPU_STEP_TAGS, ArtifactStore, TorchDevice

SAE_DICTIONARY = "sae_dictionary"
SAE_FEATURE_ANNOTATIONS = "sae_feature_annotations"
STEERING_REPORT = "steering_report"
EXPLAINED_VARIANCE = "1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the held-out users' tokens"


class SAEDictionaryConfig(dg.Config):
    layer: int = -1  # the residual stream after this many blocks; negative counts from the end (-1 = after the last)
    holdout_users: float = 0.1  # share of users whose tokens are kept out of training and measure the SAE
    overrides: dict[str, Any] = {}  # SAE or training fields, e.g. {"expansion": 4, "k": 8, "epochs": 5}


class AnnotationConfig(dg.Config):
    subject: Literal["next", "current"] = "next"  # label a token by the item predicted there, or the one read there
    max_tokens: int = 50_000  # tokens sampled for the statistics
    min_value_tokens: int = 20  # values on fewer tokens are not candidate labels (1 % of the tokens if fewer)
    min_item_tokens: int = 5  # items on fewer tokens are not named among a feature's top items
    min_fires: int = 100  # features that fired on fewer tokens are not compared or steered (their label is noise)


class SteeringConfig(dg.Config):
    n_features: int | None = 20  # the most monosemantic reliable feature of each of this many labels (None = all)
    strength_grid: list[float] | None = None  # multiples of a feature's max activation tried in turn; None: 0.25..32
    # add along the decoder direction, clamp (set) the activation; writers: the features assigned to the label (each
    # to the label it writes best), together (opt-in: on MovieLens-100k within noise of add, bench/README.md); the
    # references: label_bias, a bonus to the label's items, and concept_direction, the single direction of the output
    # that best fits that bonus
    modes: list[str] = ["add", "clamp", "label_bias", "concept_direction"]
    max_users: int = 2_000  # users sampled for the top-10 shares and the NDCG@10
    # steer a label by the feature that writes it (its effect on the scores) or by its annotation (what it reads)
    select_by: Literal["output", "annotation"] = "output"


def _reading_stage(name: str, upstream: dg.AssetsDefinition, kinds: set[str], **options: Any):
    """The asset decorator the stages that read the recommender share: one group, one code version."""
    return dg.asset(name=name, deps=[upstream], group_name=RECOMMENDER_GROUP, kinds=kinds, code_version="2", **options)


@_reading_stage(SAE_DICTIONARY, sasrec_model, {"pytorch", "safetensors"}, op_tags=GPU_STEP_TAGS)
def sae_dictionary(
    context: dg.AssetExecutionContext, config: SAEDictionaryConfig, artifacts: ArtifactStore, torch_device: TorchDevice
) -> dg.MaterializeResult:
    """A TopK sparse autoencoder (unit-norm decoder, AuxK) on one SASRec layer's hidden states at every training
    position: how much of the states it explains, how sparse it is, and how much NDCG@10 survives when its
    reconstruction replaces the layer."""
    import pandas as pd

    from ubp_pipeline.core.common.markdown_tables import markdown_table
    from ubp_pipeline.core.recommender.stages import fit_dictionary

    out = artifacts.asset_dir(SAE_DICTIONARY)
    fit = fit_dictionary(
        artifacts.asset_dir(SASREC_MODEL),
        artifacts.asset_dir(USER_SEQUENCES),
        out,
        torch_device.runtime(),
        callback=epoch_logger(context, "sae"),
        **config.model_dump(),  # layer, holdout_users, overrides
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "layer": fit.layer,
            "n_latents": fit.n_latents,
            "k": fit.k,
            "explained_variance": fit.holdout["explained_variance"],
            "explained_variance_formula": EXPLAINED_VARIANCE,
            "l0": fit.holdout["l0"],
            "dead_fraction": fit.holdout["dead_fraction"],
            "dead_fraction_window": f"latents that fire on none of the {fit.holdout['tokens']:,.0f} held-out tokens",
            "silent_fraction_expected": fit.holdout["silent_fraction_expected"],
            "silent_fraction_expected_formula": "mean over latents of (1 - its firing rate on the training tokens) ^ "
            "held-out tokens: the share silent on the held-out tokens if they were independent draws at those rates "
            "(latents dead on the training tokens count as silent)",
            "dead_on_training_tokens": fit.holdout["dead_on_training_tokens"],
            "dead_on_training_tokens_window": f"the final SAE on all {fit.training_tokens:,} training tokens",
            "training_dead_fraction": fit.training_dead_fraction,
            "training_dead_window_tokens": fit.dead_window_tokens,
            "holdout_tokens": int(fit.holdout["tokens"]),
            "training_tokens": fit.training_tokens,
            **fit.fidelity,
            "ndcg_recovered_formula": "(NDCG_sae - NDCG_mean_ablated) / (NDCG_original - NDCG_mean_ablated); NaN ="
            " undefined, when mean-ablating the layer costs less than 5 % of the original NDCG@10",
            "training_seconds": fit.training_seconds,
            "training_curve": dg.MetadataValue.md(markdown_table(pd.DataFrame(fit.history))),
        }
    )


@_reading_stage(SAE_FEATURE_ANNOTATIONS, sae_dictionary, {"pytorch", "parquet"})
def sae_feature_annotations(
    config: AnnotationConfig, artifacts: ArtifactStore, torch_device: TorchDevice
) -> dg.MaterializeResult:
    """What each live SAE feature means, read on the tokens of users the SAE never saw: its top items and sequences,
    its best category or price-band label with precision, recall, AUROC and a chance-corrected monosemanticity, and
    a histogram of how strongly it fires (0 to its largest activation, in 8 bins); the
    same for every hidden dimension (positive and negative part), and the two families compared for the current and
    the next item."""
    from ubp_pipeline.core.common.markdown_tables import markdown_table
    from ubp_pipeline.core.recommender.annotation import SINGLE_CONCEPT_AUROC
    from ubp_pipeline.core.recommender.stages import annotate_dictionary

    SINGLE_CONCEPT = f"share_single_concept_auroc>={SINGLE_CONCEPT_AUROC}"

    out = artifacts.asset_dir(SAE_FEATURE_ANNOTATIONS)
    annotations = annotate_dictionary(
        artifacts.asset_dir(SASREC_MODEL),
        artifacts.asset_dir(SAE_DICTIONARY),
        artifacts.asset_dir(USER_SEQUENCES),
        out,
        torch_device.runtime(),
        **config.model_dump(),  # subject, max_tokens, min_value_tokens, min_item_tokens, min_fires
    )
    comparison = annotations.comparison
    top = annotations.sae_features[annotations.sae_features["fires"] >= config.min_fires].head(10)
    columns = [
        "feature", "label", "monosemanticity", "precision", "recall", "auroc", "fires", "activation_histogram",
        "top_items",
    ]  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "live_features": len(annotations.sae_features),
            "reliable_features": int(comparison.loc["sae", "reliable"]),
            "median_monosemanticity_sae": float(comparison.loc["sae", "median_monosemanticity"]),
            "median_monosemanticity_hidden": float(comparison.loc["hidden", "median_monosemanticity"]),
            "share_single_concept_sae": float(comparison.loc["sae", SINGLE_CONCEPT]),
            "share_single_concept_hidden": float(comparison.loc["hidden", SINGLE_CONCEPT]),
            "sae_vs_hidden": dg.MetadataValue.md(
                markdown_table(annotations.comparison_by_subject, index=True)
                + f"\n\nmedians over features that fired on >= {config.min_fires} of {annotations.settings['tokens']:,}"
                " held-out tokens; monosemanticity = max over values of (weighted share - base) / (1 - base);"
                " single-concept = best AUROC >= 0.8"
            ),
            "top_features": dg.MetadataValue.md(
                markdown_table(top[columns].assign(top_items=top["top_items"].str.slice(0, 80)))
            ),
        }
    )


@_reading_stage(STEERING_REPORT, sae_feature_annotations, {"pytorch", "parquet"})
def steering_report(
    context: dg.AssetExecutionContext, config: SteeringConfig, artifacts: ArtifactStore, torch_device: TorchDevice
) -> dg.MaterializeResult:
    """Steering each label along the SAE feature that best raises its items (decoder direction added, or activation
    clamped, at the last position) with the strength calibrated per feature: the smallest multiple of its largest activation
    that doubles its label's share of the top-10, the share before and after, and the NDCG@10 it costs; next to it
    the same target reached by two references: a bonus to every item of the label (``label_bias``), and the output
    direction that best fits that bonus (``concept_direction``), one direction chosen for the label."""
    from ubp_pipeline.core.common.markdown_tables import markdown_table
    from ubp_pipeline.core.recommender.stages import measure_steering
    from ubp_pipeline.core.recommender.steering import steering_summary
    from ubp_pipeline.core.recommender.store import STEERING_FILE

    out = artifacts.asset_dir(STEERING_REPORT)
    report = measure_steering(
        artifacts.asset_dir(SASREC_MODEL),
        artifacts.asset_dir(SAE_DICTIONARY),
        artifacts.asset_dir(SAE_FEATURE_ANNOTATIONS),
        artifacts.asset_dir(USER_SEQUENCES),
        out,
        torch_device.runtime(),
        n_features=config.n_features,
        **({} if config.strength_grid is None else {"strength_grid": tuple(config.strength_grid)}),
        modes=tuple(config.modes),
        select_by=config.select_by,
        max_users=config.max_users,
    )
    if report.empty:
        context.log.warning("no SAE feature fired often enough to be steered: the report is empty")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out / STEERING_FILE)),
            "features_steered": int(report["feature"].nunique()),
            "steering": dg.MetadataValue.md(markdown_table(report)),
            **steering_summary(report),
        }
    )
