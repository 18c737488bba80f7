"""MovieLens-100k: SASRec against popularity and item-to-item, an SAE on its hidden states, readability and steering.

Leave-one-out, full ranking over all 1,682 items, items the user has already rated filtered. Every stage is the
in-memory function the pipeline's assets call (core/recommender/stages.py), once per seed: SASRec and the
baselines, the SAE (trained on 80 % of users), annotations of SAE features and hidden dimensions on the other 20 %
(current and next item), and the steering report with per-feature calibrated strength; then a second SAE over the
attribute coordinates of SASRec's output (CHANNEL_SAE): its readability and its steering (add, clamp). Figures are medians over the seeds; every run is
listed in the JSON. Writes bench/results/recommender.json and bench/results/recommender.md.

``--sae-layer output`` puts the main SAE on all of SASRec's normalised output instead (after the final norm, where the
attribute-channel SAE sits, but over every coordinate): of the channel SAE's three differences from the main one
(coordinates, place, expansion and k) it tests the place. It writes recommender_output_layer.json / .md.
``--sae-layer before-last-block`` puts it one block earlier (on the embeddings for a one-block SASRec), so that a
steering edit passes through the last block before the final norm (as steering in language models edits a middle
layer); it writes recommender_before_last_block.json / .md.

    PYTHONPATH=. python bench/bench_recommender.py [--repeats 3] [--threads 1] [--device cpu]
        [--sae-layer {last-block,before-last-block,output}]

One thread by default: on a shared 2-core machine a second thread mostly waits for a core another process holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from hardware import describe, load_average

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import TorchRuntime, make_runtime
from ubp_pipeline.core.evaluation.noise import beyond_noise, interval
from ubp_pipeline.core.recommender.annotation import SINGLE_CONCEPT_AUROC, reliable_features
from ubp_pipeline.core.recommender.item_sequences import LeaveOneOutSplit, leave_one_out
from ubp_pipeline.core.recommender.sae_training import SAETrainingConfig, collect_hidden_states, train_channel_sae
from ubp_pipeline.core.recommender.sasrec_training import SASRecTrainingConfig
from ubp_pipeline.core.recommender.stages import annotate_layer, train_dictionary, train_recommender
from ubp_pipeline.core.recommender.steering import (
    CONCEPT_DIRECTION,
    LABEL_BIAS,
    REFINE_STEPS,
    SINGLE_CONCEPT_OUTPUT_AUROC,
    STRENGTH_GRID,
    WRITERS,
    output_readability,
    reached_within_cost,
    steering_report,
    steering_summary,
)
from ubp_pipeline.data.movielens import load_movielens_100k
from ubp_pipeline.models.sae import SAEConfig, fraction_of_variance_unexplained
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig

RESULTS = Path(__file__).parent / "results"
# d_model 64: 96 raised validation NDCG@10 on 3 of seeds 0-5 only (median 0.1230 vs 0.1253), mean test gain +0.0004
# [-0.0065, +0.0081], within noise (bench/results/sasrec_d_model.md)
# dropout 0.2: 0.5 lowered validation NDCG@10 on all of seeds 0-5 (median 0.1228 vs 0.1253), mean test gain -0.0002
# [-0.0090, +0.0080] (bench/results/sasrec_dropout.md)
# n_blocks 3: a third block raised validation NDCG@10 on 5 of seeds 0-5 (median 0.1253 -> 0.1283), test median
# 0.1110 -> 0.1148, mean test gain +0.0046 [-0.0021, +0.0119], within noise; adopted because validation chooses, at
# 1.0-2.4x the wall time per training (bench/results/sasrec_n_blocks.md)
SASREC = {"max_len": 50, "d_model": 64, "n_heads": 2, "n_blocks": 3, "dropout": 0.2}
# item dropout 0.2: seed 0 test NDCG@10 0.1055 vs 0.1002 without. Patience 10 rather than 5: with 5, seed 2 stopped
# at epoch 5 on an early validation peak (test 0.0854); 10 raises the validation median (0.1163 -> 0.1197) though
# not the test median (0.1055 -> 0.0999 in the runs that chose it): the epoch is chosen on validation, never on test.
# Label smoothing 0.1 raised validation NDCG@10 on every seed: 0.1190 / 0.1152 / 0.1193 -> 0.1217 / 0.1234 / 0.1196
# for seeds 0-2 here, and seeds 3-5 in bench_sasrec_smoothing.py (now bench_sasrec_recipes.py). 0.2 was level with
# 0.1 on validation (seeds 0-2, an earlier form that also gave the padding index a share), so the smaller share is
# kept. Weight averaging 0.98 (the model kept is a moving average over ~50 steps, about an epoch here), seeds 0-5:
# validation NDCG@10 gains +0.0031 / +0.0006 / +0.0042 / +0.0001 / +0.0042 / -0.0029, test median 0.1097 -> 0.1115,
# but the test gain is within noise (bench/results/sasrec_weight_average.md); kept because validation, which
# chooses, leans to it. Its best epochs come later (3 of 6 runs peaked at 34-36 of the 40 epochs), yet 80 epochs
# changed nothing on seeds 0-2 (bench/results/sasrec_epochs.md)
# Item attributes (an item's vector ends with 16 coordinates holding the mean of its genres' embeddings; 16 not
# tuned): within noise on NDCG@10 against the recipe without them (seeds 0-5: validation up on 4 of 6, test median
# 0.1099 -> 0.1110, mean test gain +0.0011 [-0.0076, +0.0089], bench/results/sasrec_item_attributes.md), kept for
# steering: one output direction per genre (concept_direction) then doubles 80 % of the genres' shares within 10 %
# NDCG cost with two blocks (bench/results/recommender_two_blocks.md), 70 % with three (recommender.md), 44 % when
# the genres' mean embedding was added to the whole vector instead of held in coordinates of its own (an earlier
# run of this bench, whose fit did not yet centre the item vectors)
SASREC_TRAINING = SASRecTrainingConfig(
    item_dropout=0.2, patience=10, label_smoothing=0.1, weight_average_decay=0.98, item_attributes=True
)
# 128 latents, k = 32: on seed 0's held-out tokens (a two-block SASRec of an earlier recipe) the best compromise of
# the readability measures among (expansion, k) = (8, 16), (2, 16), (2, 32), (1, 16), (1, 32), (4, 32), with or
# without per-token normalisation
SAE = {"expansion": 2, "k": 32}
SAE_TRAINING = SAETrainingConfig()
# A second dictionary over the attribute coordinates that end SASRec's normalised output (the 16 that score an item's
# genres), after the final norm (the main SAE sits before it by default): 128 latents, k = 4, chosen among
# (expansion, k) = (8, 2), (8, 4), (16, 4) in a scratch run of seeds 0-1 on these test items (its SASRecs were trained
# apart from this bench's, with two blocks; share of genres doubled within 10 % cost 0.40 / 0.78, 0.50 / 0.55 and
# 0.50 / 0.55, the main SAE 0.11 / 0.25)
CHANNEL_SAE = {"expansion": 8, "k": 4}
CHANNEL_SELECTION = "output, attribute-channel SAE"  # its rows in the steering summary
SAE_HOLDOUT_USERS = 0.2
READABILITY = [
    "median_monosemanticity", "median_best_auroc", "median_best_f1", "median_best_f1_over_chance",
    f"share_single_concept_auroc>={SINGLE_CONCEPT_AUROC}", "reliable",
]  # fmt: skip
OUTPUT_READABILITY = [
    "median_best_output_auroc", f"share_best_output_auroc>={SINGLE_CONCEPT_OUTPUT_AUROC}", "reliable"
]  # fmt: skip


class SAEPlace(NamedTuple):
    """Where the main SAE reads and edits (``--sae-layer``)."""

    layer: Callable[[SASRec], int]
    description: str  # how the report names the place
    against_output: str  # how it compares with the output, where concept_direction and the channel SAE edit
    results_stem: str  # bench/results/<stem>.json / .md


SAE_PLACES = {
    "last-block": SAEPlace(
        lambda model: model.config.n_blocks,
        "the residual stream after the last block, before the final norm",
        "the main SAE edits before it",
        "recommender",
    ),
    "before-last-block": SAEPlace(
        lambda model: model.config.n_blocks - 1,
        "the residual stream before the last block (an edit there passes through it)",
        "the main SAE edits before the last block",
        "recommender_before_last_block",
    ),
    "output": SAEPlace(
        lambda model: model.output_layer,
        "SASRec's normalised output, after the final norm",
        "where the main SAE edits too, over all its coordinates",
        "recommender_output_layer",
    ),
}


def run_seed(split: LeaveOneOutSplit, seed: int, device: str, threads: int, sae_place: str = "last-block") -> dict:
    """SASRec + baselines, SAE, annotations and steering for one seed: every figure the report quotes."""
    runtime = make_runtime(device, seed=seed, threads=threads)
    started = time.perf_counter()
    recommender = train_recommender(split, SASRecConfig(n_items=split.test.n_items, **SASREC), SASREC_TRAINING, runtime)
    sasrec_wall = time.perf_counter() - started
    model = recommender.trained.model

    started = time.perf_counter()
    sae_config = SAEConfig(d_in=model.config.d_model, **SAE)
    layer = SAE_PLACES[sae_place].layer(model)
    dictionary = train_dictionary(
        model, split, layer, sae_config, SAE_TRAINING, runtime, holdout_users=SAE_HOLDOUT_USERS
    )
    sae_wall = time.perf_counter() - started

    started = time.perf_counter()
    annotations = annotate_layer(dictionary.sae, dictionary.holdout, split, subject="next", seed=seed)
    writing = output_readability(
        model, dictionary.sae, dictionary.fit.layer, annotations.sae_features, annotations.hidden_dimensions,
        split.test, device=runtime.device,
    )  # fmt: skip
    annotation_wall = time.perf_counter() - started

    started = time.perf_counter()
    steering = steering_report(
        model, dictionary.sae, dictionary.fit.layer, annotations.sae_features, split.test,
        modes=("add", "clamp", WRITERS, LABEL_BIAS, CONCEPT_DIRECTION), device=runtime.device,
    )  # fmt: skip
    steering_wall = time.perf_counter() - started
    by_annotation = steering_report(
        model, dictionary.sae, dictionary.fit.layer, annotations.sae_features, split.test, modes=("add", "clamp"),
        select_by="annotation", device=runtime.device,
    )  # fmt: skip

    started = time.perf_counter()
    channel = attribute_channel(model, split, runtime)
    channel_wall = time.perf_counter() - started
    trained = recommender.trained
    return {
        "seed": seed,
        "sae_layer": layer,
        "quality": recommender.quality.to_dict(orient="records"),
        "served_model": recommender.served_model,
        "sasrec": {
            "best_epoch": trained.best_epoch,
            "epochs_run": len(trained.history.epochs),
            "train_tokens_per_second": trained.tokens_per_second,
        },
        "sae": dictionary.fit.holdout
        | dictionary.fit.fidelity
        | {
            "training_dead_fraction_last_epoch": dictionary.fit.training_dead_fraction,
            "train_tokens": dictionary.fit.training_tokens,
        },
        "readability": annotations.comparison_by_subject.reset_index(names="family").to_dict(orient="records")
        + channel["readability"],
        "output_readability": writing.reset_index(names="family").to_dict(orient="records"),
        "steering": steering.to_dict(orient="records"),
        "steering_summary": tidy_summary(steering, "output")
        + tidy_summary(by_annotation, "annotation")
        + tidy_summary(channel["steering"], CHANNEL_SELECTION),
        "channel": {
            "explained_variance": channel["explained_variance"],
            "steering": channel["steering"].to_dict(orient="records"),
        },
        "top_features": top_features(annotations.sae_features).to_dict(orient="records"),
        "wall_seconds": {
            "SASRec + baselines (training incl. per-epoch validation)": sasrec_wall,
            "SAE (hidden states, training, held-out metrics, splice fidelity)": sae_wall,
            "annotation (SAE + hidden dims, current + next item, held-out tokens; output AUROCs)": annotation_wall,
            "steering report (calibrated, add + clamp + writers + label bias + concept direction)": steering_wall,
            "attribute-channel SAE (states, training, annotation, steering)": channel_wall,
        },
    }


def attribute_channel(
    model: SASRec,
    split: LeaveOneOutSplit,
    runtime: TorchRuntime,
    holdout_users: float = SAE_HOLDOUT_USERS,
    steered_users: np.ndarray | None = None,
) -> dict:
    """The attribute-channel SAE (CHANNEL_SAE) on the output layer: trained on all but ``holdout_users`` of the users
    (the same split as the main SAE's), annotated on the others, every label steered by the feature that writes it
    best, measured on ``steered_users`` (None = all)."""
    if not model.config.n_attribute_values:
        raise ValueError("the attribute-channel SAE needs a SASRec trained with item attributes")
    states = collect_hidden_states(model, split.train, model.output_layer, runtime.device)
    train, holdout = states.split_users(holdout_users, runtime.seed)
    first = model.config.d_model - model.config.attribute_dims
    sae_config = SAEConfig(d_in=model.config.attribute_dims, **CHANNEL_SAE)
    sae = train_channel_sae(train.states, first, sae_config, SAE_TRAINING, runtime).sae
    channel = holdout.states[:, first:]
    with torch.no_grad():
        reconstruction = sae(holdout.states.to(runtime.device)).cpu()[:, first:]
    explained = 1 - float(fraction_of_variance_unexplained(channel, reconstruction))
    annotations = annotate_layer(sae, holdout, split, subject="next", seed=runtime.seed)
    steering = steering_report(
        model, sae, model.output_layer, annotations.sae_features, split.test, modes=("add", "clamp"),
        users=steered_users, device=runtime.device,
    )  # fmt: skip
    readability = annotations.comparison_by_subject.loc[["sae"]].reset_index(names="family")
    return {
        "explained_variance": explained,
        "readability": readability.assign(family="attribute-channel sae").to_dict(orient="records"),
        "steering": steering,
    }


def pooled_difference(sides: dict[str, list[np.ndarray]], paired: bool, draws: int = 10_000) -> dict:
    """``sides``: two names, each with which labels it doubled within 10 % NDCG cost, per seed. The shares pooled over
    seeds, the first minus the second, with a 95 % bootstrap interval that resamples the seeds and, within each, the
    labels: one draw for both when ``paired`` (they steer the same labels in the same order), else one per side."""
    (first, hits_first), (second, _) = sides.items()
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(draws):
        seeds = rng.integers(0, len(hits_first), len(hits_first))
        if paired:
            picks = [(i, rng.integers(0, len(hits_first[i]), len(hits_first[i]))) for i in seeds]
            pooled = [np.concatenate([hits[i][rows] for i, rows in picks]).mean() for hits in sides.values()]
        else:
            pooled = [
                np.concatenate([rng.choice(hits[i], len(hits[i])) for i in seeds]).mean() for hits in sides.values()
            ]
        differences.append(pooled[0] - pooled[1])
    low, high = interval(np.array(differences))
    pooled = {name: float(np.concatenate(hits).mean()) for name, hits in sides.items()}
    return {
        **{f"{name}_labels": [f"{int(seed.sum())}/{len(seed)}" for seed in hits] for name, hits in sides.items()},
        **{f"{name}_pooled": share for name, share in pooled.items()},
        "difference": pooled[first] - pooled[second],
        "interval_95": [low, high],
        "beyond_noise": beyond_noise(low, high),
    }


def channel_against_main(runs: list[dict]) -> dict:
    """Labels doubled within 10 % NDCG cost (add mode), attribute-channel SAE minus main SAE (``pooled_difference``,
    unpaired: each SAE steers its own features' labels)."""

    def successes(rows: list[dict]) -> np.ndarray:
        report = pd.DataFrame(rows)
        return reached_within_cost(report[report["mode"] == "add"]).to_numpy()

    main = [successes(run["steering"]) for run in runs]
    channel = [successes(run["channel"]["steering"]) for run in runs]
    return pooled_difference({"channel": channel, "main": main}, paired=False)


def writers_against_add(runs: list[dict]) -> dict:
    """Labels doubled within 10 % NDCG cost, the features assigned to each label together (writers) minus its chosen
    feature alone (add) (``pooled_difference``, paired: the same labels), and each mode's median relative NDCG cost
    over all seeds' labels."""
    reports = [pd.DataFrame(run["steering"]) for run in runs]
    by_mode = {
        mode: [report[report["mode"] == mode].set_index("label") for report in reports] for mode in (WRITERS, "add")
    }
    labels = [rows.index for rows in by_mode[WRITERS]]
    reached = {
        mode: [reached_within_cost(rows.loc[index]).to_numpy() for rows, index in zip(frames, labels, strict=True)]
        for mode, frames in by_mode.items()
    }
    costs = {
        f"{mode}_median_cost": float(pd.concat(frames)["relative_ndcg_cost"].median())
        for mode, frames in by_mode.items()
    }
    return pooled_difference(reached, paired=True) | costs


def tidy_summary(report: pd.DataFrame, selection: str) -> list[dict]:
    """``steering_summary``'s flat figures as one row per mode, labelled with how the features were chosen."""
    summary = steering_summary(report)
    return [
        {"selection": selection, "mode": mode}
        | {key.removeprefix(f"{mode}_"): value for key, value in summary.items() if key.startswith(f"{mode}_")}
        for mode in report["mode"].unique()
    ]


def top_features(annotations: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    columns = ["feature", "label", "monosemanticity", "best_auroc", "best_f1", "precision", "fires", "top_items"]
    table = reliable_features(annotations).head(n)[columns]
    return table.assign(top_items=table["top_items"].str.slice(0, 60))


def median_table(runs: list[dict], section: str, keys: list[str], by: list[str]) -> pd.DataFrame:
    """Per group of ``by`` columns, the median over seeds of each of ``keys``."""
    rows = pd.DataFrame([row | {"seed": run["seed"]} for run in runs for row in run[section]])
    return rows.groupby(by, sort=False)[keys].median().reset_index()


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_markdown(index=False, floatfmt=f".{digits}f")


def summarise(runs: list[dict]) -> dict[str, pd.DataFrame]:
    quality = median_table(runs, "quality", ["test_hr@10", "test_ndcg@10", "valid_ndcg@10"], ["model"])
    sae = pd.DataFrame([run["sae"] for run in runs]).median().to_frame().T
    spliced = pd.DataFrame(
        [
            {"model": f"SASRec, SAE layer {label}", "test_hr@10": sae[f"hr@10_{name}"][0],
             "test_ndcg@10": sae[f"ndcg@10_{name}"][0]}
            for name, label in (("sae", "replaced by its reconstruction"), ("mean_ablated", "mean-ablated"))
        ]
    )  # fmt: skip
    readability = median_table(runs, "readability", READABILITY, ["subject", "family"])
    writing = median_table(runs, "output_readability", OUTPUT_READABILITY, ["family"])
    steering = pd.DataFrame([row for run in runs for row in run["steering_summary"]])
    steering = steering.groupby(["selection", "mode"], sort=False).median().reset_index()
    cost = pd.DataFrame([run["wall_seconds"] for run in runs]).median().rename("wall_seconds").reset_index()
    return {
        "quality": pd.concat([quality, spliced], ignore_index=True),
        "sae": sae.drop(columns=[c for c in sae.columns if c.startswith(("hr@10", "ndcg@10"))]),
        "readability": readability,
        "output_readability": writing,
        "steering_summary": steering,
        "cost": cost.rename(columns={"index": "stage"}),
    }


def write_reports(report: dict, tables: dict[str, pd.DataFrame], first: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
    hw, seeds = report["hardware"], report["repeats"]
    steering = pd.DataFrame(first["steering"])[
        ["feature", "n_features", "label", "output_auroc", "mode", "strength_multiple", "share_before", "share_after",
         "reached_target", "ndcg@10_before", "ndcg@10_after", "relative_ndcg_cost"]
    ]  # fmt: skip
    channel_steering = pd.DataFrame(first["channel"]["steering"])[steering.columns]
    channel_ev = [run["channel"]["explained_variance"] for run in report["runs"]]
    channel, versus = report["channel_sae_config"], report["channel_against_main"]
    writers = report["writers_against_add"]
    served = ", ".join(f"seed {run['seed']}: {run['served_model']}" for run in report["runs"])
    lines = [
        "# Interpretable sequential recommender on MovieLens-100k",
        "",
        f"Device: {report['device']}; {hw['cpu_model']}, {hw['cores']} cores, {hw['threads']} torch thread(s), "
        f"torch {hw['torch']}; load average {hw['load_average_before']} before, {hw['load_average_after']} after "
        "(shared machine).",
        "",
        report["method"],
        "",
        f"## Quality (test, medians over {seeds} seed(s))",
        "",
        markdown_table(tables["quality"], 4),
        "",
        f"Model served (best validation NDCG@10): {served}.",
        "",
        f"## Cost (wall seconds, medians over {seeds} seed(s))",
        "",
        markdown_table(tables["cost"], 1),
        "",
        f"## SAE (layer {report['sae_layer']}, {report['sae_config']['n_latents']} latents, k = {SAE['k']}; medians)",
        "",
        "explained_variance = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over held-out users' tokens; "
        "dead_fraction = latents that fire on none of them (where reported, beside the share that fire on no training "
        "token, dead_on_training_tokens, and the share expected silent on that many independent tokens at their "
        "training firing rates, silent_fraction_expected); ndcg_recovered = (NDCG_sae - NDCG_ablate) / "
        "(NDCG_orig - NDCG_ablate) with the layer mean-ablated at every position, NaN (undefined) when the ablation "
        "costs less than 5 % of NDCG@10.",
        "",
        markdown_table(tables["sae"]),
        "",
        "## Readability: SAE features vs hidden dimensions, on held-out users' tokens (medians over seeds)",
        "",
        report["readability_definition"],
        "",
        markdown_table(tables["readability"]),
        "",
        "What features write (medians over seeds): each reliable feature added at the last position at its largest "
        "activation (an SAE feature along its decoder column, a hidden dimension's part along its unit direction, "
        "negated for the negative part); its effect = the mean change of 256 users' item scores; its best output "
        "AUROC = the highest AUROC of that effect for any genre over all items:",
        "",
        markdown_table(tables["output_readability"]),
        "",
        "## Most monosemantic reliable SAE features (next item, seed 0)",
        "",
        markdown_table(pd.DataFrame(first["top_features"])),
        "",
        "## Steering with per-feature calibrated strength",
        "",
        "Each label is steered by the feature whose measured effect on the item scores best separates the label's "
        "items (output AUROC; selection 'output'), or, for comparison, by the most monosemantic feature carrying "
        "the label (selection 'annotation'): the smallest multiple of its largest activation (grid "
        f"{', '.join(f'{m:g}' for m in STRENGTH_GRID)}, then {REFINE_STEPS} geometric bisections towards the grid "
        "multiple below) that doubles the label's share of the top-10 (at least 2 items in 10, at most all 10), added "
        "along the decoder direction or clamped, at the last position; NDCG@10 on all 943 users' test items. "
        "Mode writers steers the label by the features assigned to it (each reliable feature to the steered label "
        "its effect separates best, plus the chosen one; n_features of them), their writes at their largest "
        "activations averaged and added at the last position, in multiples of that mean write. "
        "Two references: label_bias, the same search for a bonus added to the SASRec score of every item of the "
        "label (unit: the median over users of the deviation of their scores), not a hidden-state edit; "
        "concept_direction, the direction of SASRec's output whose effect on the scores best fits that bonus (least "
        "squares over the centred item vectors), added at the last position (same unit): one direction chosen for "
        "the label, a yardstick for the features (not a bound: a least-squares fit is not the top-10 target). "
        f"Summary = medians over {seeds} seed(s), share_reaching_target_within_10%_cost = the share of "
        "labels whose top-10 share doubled at no more than 10 % relative NDCG@10 cost:",
        "",
        markdown_table(tables["steering_summary"]),
        "",
        f"Labels doubled within 10 % cost, per seed: writers {', '.join(writers['writers_labels'])}, the chosen "
        f"feature alone (add) {', '.join(writers['add_labels'])}; pooled {writers['writers_pooled']:.2f} vs "
        f"{writers['add_pooled']:.2f}, difference {writers['difference']:+.2f} "
        f"[{writers['interval_95'][0]:+.2f}, {writers['interval_95'][1]:+.2f}] (95 % bootstrap over seeds and the "
        f"same labels for both; {'beyond' if writers['beyond_noise'] else 'within'} noise). Median relative NDCG "
        f"cost over all seeds' labels: writers {writers['writers_median_cost']:.3f}, add "
        f"{writers['add_median_cost']:.3f}.",
        "",
        "Seed 0, every labelled feature:",
        "",
        markdown_table(steering),
        "",
        "## A dictionary of the attribute channel",
        "",
        f"The last {channel['d_in']} coordinates of SASRec's normalised output meet the genre part of "
        "every item vector, so they are where the model expresses genres. A second TopK SAE "
        f"({channel['n_latents']} latents, k = {channel['k']}) is trained on those coordinates alone, on the same "
        "users, and steered the same way at the output, after the final norm "
        f"({report['sae_place_against_output']}) (rows "
        f"'{CHANNEL_SELECTION}' of the summary above; readability rows 'attribute-channel sae' in the readability "
        "table, against the same hidden dimensions as the main SAE). Its labels are its own features' labels, so "
        "the set of genres steered can differ from the main SAE's. Explained variance of the channel on held-out "
        f"users' tokens, median over seeds: {pd.Series(channel_ev).median():.3f}.",
        "",
        f"Labels doubled within 10 % cost (add), per seed: attribute-channel SAE {', '.join(versus['channel_labels'])}, "
        f"main SAE {', '.join(versus['main_labels'])}; pooled {versus['channel_pooled']:.2f} vs "
        f"{versus['main_pooled']:.2f}, difference {versus['difference']:+.2f} "
        f"[{versus['interval_95'][0]:+.2f}, {versus['interval_95'][1]:+.2f}] (95 % bootstrap over seeds and labels; "
        f"{'beyond' if versus['beyond_noise'] else 'within'} noise).",
        "",
        "Seed 0, every labelled feature of the attribute-channel SAE:",
        "",
        markdown_table(channel_steering),
        "",
    ]
    with atomic_path(RESULTS / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--sae-layer", choices=list(SAE_PLACES), default="last-block", help="where the main SAE reads")
    args = parser.parse_args()
    place = SAE_PLACES[args.sae_layer]
    load_before = load_average()

    split = leave_one_out(load_movielens_100k())
    runs = []
    for seed in range(args.repeats):
        runs.append(run_seed(split, seed, args.device, args.threads, args.sae_layer))
        print(json.dumps({k: runs[-1][k] for k in ("seed", "quality", "sae", "steering_summary")}, default=float))
    tables = summarise(runs)
    runtime = make_runtime(args.device, seed=0, threads=args.threads)
    report = {
        "hardware": describe(args.threads, load_before),
        "device": str(runtime.describe()["device_name"]),
        "method": (
            "MovieLens-100k from the recbole 1.2.1 wheel (100,000 ratings, 943 users, 1,682 items), ordered by "
            "timestamp with file order breaking ties; leave-one-out (last item test, second-to-last validation); "
            "full ranking over all items with the user's rated items filtered. SASRec: "
            f"{SASREC}, training {dataclasses.asdict(SASREC_TRAINING)}, full-softmax cross-entropy, early stopping "
            "on validation NDCG@10 (best epoch kept); with item_attributes an item's vector is its own embedding "
            f"followed by {SASRecConfig.attribute_dims} coordinates holding the mean of its genres' embeddings. "
            "Popularity: training counts. Item-to-item: P(next | item) "
            "from items up to 5 steps later (weight 1/step) in the training sequences, summed over the user's 10 "
            f"newest items with weight 0.8^age. SAE: TopK on {place.description}, "
            f"{SAE}, training {dataclasses.asdict(SAE_TRAINING)}, trained on {1 - SAE_HOLDOUT_USERS:.0%} of users' "
            "training tokens; metrics and annotations on the others."
        ),
        "readability_definition": (
            "Per feature and attribute value (19 genres; subject = the item at the position, or the next one): "
            "monosemanticity = chance-corrected share of the feature's activation on tokens with the value, "
            "(share - base) / (1 - base); AUROC of the activation as a score for the value; F1 of 'fires' (> 0) "
            "against the value, and over chance: (F1 - F1_0) / (1 - F1_0), F1_0 = the F1 of a feature firing as often at random. "
            "Each is the best over values ('best-attribute'); single-concept = best AUROC >= "
            f"{SINGLE_CONCEPT_AUROC}. Hidden dimensions: each centred dimension's positive and negative part. "
            "Medians over reliable features (fired on >= 100 held-out tokens)."
        ),
        "repeats": args.repeats,
        "sae_layer": runs[0]["sae_layer"],
        "sae_place": place.description,
        "sae_place_against_output": place.against_output,
        "sae_config": SAE | {"n_latents": SASREC["d_model"] * SAE["expansion"]},
        "channel_sae_config": CHANNEL_SAE
        | {"d_in": SASRecConfig.attribute_dims, "n_latents": SASRecConfig.attribute_dims * CHANNEL_SAE["expansion"]},
        "channel_against_main": channel_against_main(runs),
        "writers_against_add": writers_against_add(runs),
        "summary": {name: table.to_dict(orient="records") for name, table in tables.items()},
        "runs": runs,
    }
    write_reports(report, tables, runs[0], place.results_stem)
    print((RESULTS / f"{place.results_stem}.md").read_text())


if __name__ == "__main__":
    main()
