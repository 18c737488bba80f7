"""MovieLens-100k: SASRec quality and cost, then the SAE on its last layer, feature annotations and steering.

Leave-one-out, full ranking over all 1,682 items, items the user has already rated filtered; SASRec trained with
``--repeats`` seeds (quality and time quoted as medians, every run listed), the SAE trained once per SASRec run on
its hidden states after the last block. Annotations, the SAE-vs-hidden-dimension comparison and the steering report
use the first seed's models. Writes bench/results/recommender.json and bench/results/recommender.md.

    PYTHONPATH=. python bench/bench_recommender.py [--repeats 3] [--threads 1]   (from the repository root)

One thread by default: on this shared 2-core machine a second thread mostly waits for a core another process holds
(measured here under load: 0.18 s vs 2.5 s per SASRec step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import pandas as pd
from hardware import describe, load_average

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.recommender.annotation import (
    annotate_hidden_dimensions,
    annotate_sae_features,
    compare_monosemanticity,
    reliable_features,
)
from ubp_pipeline.core.recommender.item_sequences import LeaveOneOutSplit, leave_one_out
from ubp_pipeline.core.recommender.ranking import (
    SASRecTrainingConfig,
    evaluate_full_ranking,
    popularity_scorer,
    sasrec_scorer,
    train_sasrec,
)
from ubp_pipeline.core.recommender.sae_training import (
    HiddenStates,
    SAETrainingConfig,
    collect_hidden_states,
    evaluate_sae,
    splice_fidelity,
    train_sae,
)
from ubp_pipeline.core.recommender.steering import steering_report
from ubp_pipeline.data.movielens import load_movielens_100k
from ubp_pipeline.models.sae import SAEConfig, TopKSAE
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig

RESULTS = Path(__file__).parent / "results"
SASREC_TRAINING = SASRecTrainingConfig()
SAE_TRAINING = SAETrainingConfig()
SAE_HOLDOUT_USERS = 0.1
SAE_SUMMARY = [
    ("holdout", "explained_variance"), ("holdout", "l0"), ("holdout", "dead_fraction"), ("holdout", "tokens"),
    (None, "training_dead_fraction_last_epoch"), (None, "ndcg@10_original"), (None, "ndcg@10_sae"),
    (None, "ndcg@10_mean_ablated"), (None, "ndcg_recovered"),
]


def run_seed(split: LeaveOneOutSplit, seed: int, threads: int) -> tuple[dict, SASRec, TopKSAE, HiddenStates]:
    """One SASRec + SAE run: (metrics, model, sae, the hidden states the SAE was trained on)."""
    runtime = make_runtime("cpu", seed=seed, threads=threads)
    started = time.perf_counter()
    trained = train_sasrec(split, SASRecConfig(n_items=split.test.n_items), SASREC_TRAINING, runtime)
    sasrec_wall = time.perf_counter() - started
    test = evaluate_full_ranking(sasrec_scorer(trained.model), split.test)

    layer = trained.model.config.n_blocks
    states = collect_hidden_states(trained.model, split.train, layer, runtime.device)
    sae_train, sae_holdout = states.split_users(SAE_HOLDOUT_USERS, seed)
    started = time.perf_counter()
    sae = train_sae(sae_train.states, SAEConfig(d_in=trained.model.config.d_model), SAE_TRAINING, runtime)
    sae_wall = time.perf_counter() - started
    metrics = {
        "seed": seed,
        "sasrec": {
            "test_hr@10": test["hr@10"],
            "test_ndcg@10": test["ndcg@10"],
            "train_wall_seconds": sasrec_wall,
            "epochs_run": len(trained.history.epochs),
            "best_epoch": trained.best_epoch,
            "train_tokens_per_second": trained.tokens_per_second,
            "best_valid_ndcg@10": max(trained.history.series("valid_ndcg@10")),
        },
        "sae": {
            "layer": layer,
            "train_tokens": len(sae_train),
            "train_wall_seconds": sae_wall,
            "train_tokens_per_second": sae.tokens_per_second,
            "holdout": evaluate_sae(sae.sae, sae_holdout.states),
            "training_dead_fraction_last_epoch": sae.history.last()["dead"],
            **splice_fidelity(trained.model, sae.sae, states, split.test, runtime.device),
        },
    }
    return metrics, trained.model, sae.sae, states


def median_of(runs: list[dict], section: str, key: str) -> float:
    return statistics.median(run[section][key] for run in runs)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_markdown(index=False, floatfmt=f".{digits}f")


def write_reports(report: dict, tables: dict[str, pd.DataFrame]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / "recommender.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
    hw, quality, sae = report["hardware"], report["quality"], report["sae_median"]
    cost = pd.DataFrame(report["cost"])
    cost["train_tokens_per_second"] = cost["train_tokens_per_second"].map(lambda v: "-" if pd.isna(v) else f"{v:,.0f}")
    lines = [
        "# Interpretable sequential recommender on MovieLens-100k",
        "",
        f"Hardware: {hw['cpu_model']}, {hw['cores']} cores, {hw['threads']} torch thread(s), torch {hw['torch']}; "
        f"load average {hw['load_average_before']} before, {hw['load_average_after']} after (shared machine).",
        "",
        report["method"],
        "",
        f"## Quality (test, median of {report['repeats']} seeds)",
        "",
        markdown_table(pd.DataFrame(quality)),
        "",
        "## Cost",
        "",
        markdown_table(cost, digits=1),
        "",
        f"## SAE (layer {sae['layer']}, {report['sae_config']['n_latents']} latents, k = {report['sae_config']['k']})",
        "",
        "Explained variance = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over held-out users' tokens; "
        "dead_fraction = latents that never fire on any held-out token; training_dead_fraction = latents that did "
        "not fire in the last 20,000 training tokens; NDCG recovered = (NDCG_sae - NDCG_ablate) / "
        "(NDCG_orig - NDCG_ablate) with the layer mean-ablated at every position. Medians over seeds.",
        "",
        markdown_table(pd.DataFrame([{k: v for k, v in sae.items() if k != "layer"}])),
        "",
        "## Monosemanticity: SAE latents vs hidden dimensions (positive and negative part of each centred dimension)",
        "",
        report["monosemanticity_definition"],
        "",
    ]
    for subject in ("next", "current"):
        table = tables[f"monosemanticity_{subject}"].reset_index(names="features of")
        lines += [f"Subject item: {subject}", "", markdown_table(table), ""]
    lines += [
        "## Most monosemantic reliable SAE features (subject: next item; seed 0)",
        "",
        markdown_table(tables["top_features"]),
        "",
        "## Steering (seed 0; add the feature's decoder direction at the last position; strength = multiple of the "
        "feature's max activation; share = mean share of top-10 lists carrying the label's value, all 943 users)",
        "",
        markdown_table(tables["steering"]),
        "",
    ]
    with atomic_path(RESULTS / "recommender.md") as tmp:
        tmp.write_text("\n".join(lines))


def quality_rows(popularity: dict, runs: list[dict]) -> list[dict]:
    rows = [("popularity", popularity["hr@10"], popularity["ndcg@10"])]
    for model, section, hr, ndcg in [
        ("SASRec", "sasrec", "test_hr@10", "test_ndcg@10"),
        ("SASRec + SAE reconstruction spliced in", "sae", "hr@10_sae", "ndcg@10_sae"),
        ("SASRec, SAE layer mean-ablated", "sae", "hr@10_mean_ablated", "ndcg@10_mean_ablated"),
    ]:
        rows.append((model, median_of(runs, section, hr), median_of(runs, section, ndcg)))
    return [{"model": model, "hr@10": hr, "ndcg@10": ndcg} for model, hr, ndcg in rows]


def cost_rows(runs: list[dict], annotation_seconds: float, steering_seconds: float) -> list[dict]:
    return [
        {
            "stage": "SASRec training (incl. per-epoch validation)",
            "wall_seconds": median_of(runs, "sasrec", "train_wall_seconds"),
            "train_tokens_per_second": median_of(runs, "sasrec", "train_tokens_per_second"),
        },
        {
            "stage": "SAE training",
            "wall_seconds": median_of(runs, "sae", "train_wall_seconds"),
            "train_tokens_per_second": median_of(runs, "sae", "train_tokens_per_second"),
        },
        {"stage": "annotation (SAE + hidden dims, 2 subjects)", "wall_seconds": annotation_seconds},
        {"stage": "steering report", "wall_seconds": steering_seconds},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    load_before = load_average()

    split = leave_one_out(load_movielens_100k())
    popularity = evaluate_full_ranking(popularity_scorer(split.train), split.test)
    runs, models = [], []
    for seed in range(args.repeats):
        metrics, *trained = run_seed(split, seed, args.threads)
        print(json.dumps(metrics, default=float), flush=True)
        runs.append(metrics)
        models.append(trained)
    model, sae, states = models[0]

    started = time.perf_counter()
    annotations = {
        subject: (
            annotate_sae_features(sae, states, split.train, subject=subject),
            annotate_hidden_dimensions(states, split.train, subject=subject),
        )
        for subject in ("next", "current")
    }
    annotation_seconds = time.perf_counter() - started
    started = time.perf_counter()
    steering = steering_report(model, sae, states.layer, annotations["next"][0], split.test)
    steering_seconds = time.perf_counter() - started

    sae_median = {"layer": runs[0]["sae"]["layer"]} | {
        key: statistics.median(run["sae"][section][key] if section else run["sae"][key] for run in runs)
        for section, key in SAE_SUMMARY
    }
    comparisons = {
        f"monosemanticity_{subject}": compare_monosemanticity({"sae": sae_table, "hidden": hidden_table})
        for subject, (sae_table, hidden_table) in annotations.items()
    }
    top_features = reliable_features(annotations["next"][0]).head(12)[
        ["feature", "label", "monosemanticity", "precision", "recall", "auroc", "fires", "top_items"]
    ].assign(top_items=lambda table: table["top_items"].str.slice(0, 70))
    report = {
        "hardware": describe(args.threads, load_before),
        "method": (
            "MovieLens-100k from the recbole 1.2.1 wheel (100,000 ratings, 943 users, 1,682 items), ordered by "
            "timestamp with file order breaking ties; leave-one-out (last item test, second-to-last validation); "
            "full ranking over all items with the user's rated items filtered. SASRec: "
            f"{dataclasses.asdict(SASRecConfig(n_items=split.test.n_items))}, training "
            f"{dataclasses.asdict(SASREC_TRAINING)}, "
            "full-softmax cross-entropy on every position of windows that cover each training transition once, "
            "early stopping on validation NDCG@10 (weights of the best epoch kept). SAE: TopK on the residual stream "
            "after the last block, trained on 90 % of users' training tokens, metrics on the other 10 %; training "
            f"{dataclasses.asdict(SAE_TRAINING)}."
        ),
        "monosemanticity_definition": (
            "Per feature: max over attribute values of (weighted share - base) / (1 - base), weighted share = share "
            "of the feature's total activation on tokens whose subject item has the value, base = share of all "
            "tokens with it (ubp_pipeline/core/recommender/annotation.py). Subject item = the item at the position (current) "
            "or the one that followed (next). Also listed: the same chance correction over each feature's 100 "
            "strongest tokens (top), best AUROC and best F1 over values, precision of the label value. 50,000 "
            "sampled tokens; medians over reliable features (fired on >= 100 of them)."
        ),
        "repeats": args.repeats,
        "sae_config": dataclasses.asdict(sae.config) | {"n_latents": sae.config.n_latents},
        "quality": quality_rows(popularity, runs),
        "cost": cost_rows(runs, annotation_seconds, steering_seconds),
        "sae_median": sae_median,
        "runs": runs,
        "monosemanticity": {name: table.to_dict(orient="index") for name, table in comparisons.items()},
        "steering": steering.to_dict(orient="records"),
        "top_features": top_features.to_dict(orient="records"),
    }
    steering_view = steering[
        ["feature", "label", "strength_multiple", "strength", "share_before", "share_after", "share_ratio",
         "ndcg@10_before", "ndcg@10_after"]
    ]
    write_reports(report, {**comparisons, "top_features": top_features, "steering": steering_view})
    print((RESULTS / "recommender.md").read_text())


if __name__ == "__main__":
    main()
