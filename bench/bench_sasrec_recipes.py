"""MovieLens-100k (or a user_sequences partition): SASRec alone under two recipes, paired by seed and user.

bench_recommender.py trains SASRec with seeds 0-2 inside the whole interpretability report; this trains only SASRec,
on its recipe with some settings (training or model) replaced (``--baseline``) against the same recipe with
others replaced (``--change``), for more seeds, and reports validation and test NDCG@10 per seed with the paired
gain, and a 95 % interval of the mean test gain: a bootstrap that redraws both the seeds (training noise) and the
test users (which users the split happens to hold), the two recipes paired by seed and user. A gain is a finding
when its interval excludes 0. The epoch is chosen on validation. With ``--sequences`` it trains on the skus of a
user_sequences partition (a pipeline run's artifacts/user_sequences/<day>) with the pipeline's own recipe (stages.py)
instead.
Writes bench/results/sasrec_NAME.json and .md.

    PYTHONPATH=. python bench/bench_sasrec_recipes.py --name weight_average --baseline weight_average_decay=0 \\
        --change weight_average_decay=0.98 [--seeds 0 1 2 3 4 5] [--jobs 2] [--threads 1] [--sequences FOLDER]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from bench_recommender import SASREC, SASREC_TRAINING
from hardware import describe, load_average

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.evaluation.noise import beyond_noise, bootstrap_weights, interval
from ubp_pipeline.core.recommender.item_sequences import LeaveOneOutSplit, leave_one_out
from ubp_pipeline.core.recommender.ranking import ndcg_per_user, sasrec_scorer
from ubp_pipeline.core.recommender.sasrec_training import SASRecTrainingConfig, train_sasrec
from ubp_pipeline.core.recommender.sku_sequences import build_sku_sequences
from ubp_pipeline.core.recommender.stages import SASREC_DEFAULTS as PIPELINE_SASREC
from ubp_pipeline.core.recommender.stages import SASREC_TRAINING as PIPELINE_TRAINING
from ubp_pipeline.data.movielens import load_movielens_100k
from ubp_pipeline.models.sasrec import SASRecConfig

RESULTS = Path(__file__).parent / "results"
RECIPES = ("baseline", "change")


# the SASRecConfig fields a recipe may replace (n_items and the attribute fields come from the data)
MODEL_FIELDS = {"max_len", "d_model", "n_heads", "n_blocks", "dropout", "attribute_dims"}


def settings(pairs: list[str]) -> dict:
    """KEY=VALUE pairs (VALUE as JSON) naming SASRecTrainingConfig fields or the SASRecConfig fields in MODEL_FIELDS."""
    known = {f.name for f in dataclasses.fields(SASRecTrainingConfig)} | MODEL_FIELDS
    parsed = {key: json.loads(value) for key, value in (pair.split("=", 1) for pair in pairs)}
    unknown = set(parsed) - known
    if unknown:
        raise SystemExit(
            f"not settable SASRecTrainingConfig or SASRecConfig fields: {sorted(unknown)}; known: {sorted(known)}"
        )
    return parsed


def recipe_for(sequences: str | None) -> tuple[str, dict, SASRecTrainingConfig]:
    """(data name, SASRec fields, training recipe): MovieLens-100k with bench_recommender.py's recipe, or the skus of a
    user_sequences partition with the pipeline's."""
    if sequences is None:
        return "MovieLens-100k", SASREC, SASREC_TRAINING
    return f"the skus of {sequences}", PIPELINE_SASREC, PIPELINE_TRAINING


def load_split(sequences: str | None) -> LeaveOneOutSplit:
    return leave_one_out(load_movielens_100k() if sequences is None else build_sku_sequences(sequences))


def train_one(recipe: str, overrides: dict, seed: int, threads: int, sequences: str | None) -> dict:
    """One SASRec training; validation and test NDCG@10 of the epoch kept, and every test user's NDCG@10."""
    split, (_, sasrec, recipe_training) = load_split(sequences), recipe_for(sequences)
    runtime = make_runtime("cpu", seed=seed, threads=threads)
    started = time.perf_counter()
    model_overrides = {key: value for key, value in overrides.items() if key in MODEL_FIELDS}
    training = dataclasses.replace(recipe_training, **{k: v for k, v in overrides.items() if k not in MODEL_FIELDS})
    trained = train_sasrec(
        split, SASRecConfig(n_items=split.test.n_items, **sasrec | model_overrides), training, runtime
    )
    test = ndcg_per_user(sasrec_scorer(trained.model), split.test)
    return {
        "recipe": recipe, "seed": seed, "best_epoch": trained.best_epoch,
        "valid_ndcg@10": max(trained.history.series("valid_ndcg@10")), "test_ndcg@10": float(test.mean()),
        "seconds": time.perf_counter() - started, "test_ndcg@10_per_user": test.tolist(),
    }  # fmt: skip


def gain_interval(runs: list[dict], seeds: list[int], replicates: int = 2_000) -> tuple[float, float, float]:
    """Mean test gain per user and seed, and its 95 % interval from a bootstrap over seeds and users together."""
    by_key = {(run["recipe"], run["seed"]): np.asarray(run["test_ndcg@10_per_user"]) for run in runs}
    gains = np.stack([by_key["change", seed] - by_key["baseline", seed] for seed in seeds])  # (seeds, users)
    per_seed = gains @ bootstrap_weights(gains.shape[1], replicates) / gains.shape[1]  # (seeds, replicates)
    drawn_seeds = np.random.default_rng(1).integers(0, len(seeds), (len(seeds), replicates))
    draws = np.take_along_axis(per_seed, drawn_seeds, axis=0).mean(0)
    return float(gains.mean()), *interval(draws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="results file stem: bench/results/sasrec_NAME.*")
    parser.add_argument("--baseline", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--change", nargs="+", required=True, metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, each on --threads threads")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequences", help="a user_sequences partition folder instead of MovieLens-100k")
    args = parser.parse_args()
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"--seeds repeats a seed: {args.seeds}")
    baseline = settings(args.baseline)
    recipes = {"baseline": baseline, "change": baseline | settings(args.change)}
    load_before = load_average()
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(train_one, recipe, recipes[recipe], seed, args.threads, args.sequences)
            for seed in args.seeds
            for recipe in RECIPES
        ]
        runs = []
        for future in futures:
            runs.append(future.result())
            print(json.dumps({k: v for k, v in runs[-1].items() if not k.endswith("per_user")}), flush=True)
    wall = time.perf_counter() - started

    table = pd.DataFrame([{k: v for k, v in run.items() if not k.endswith("per_user")} for run in runs])
    wide = table.pivot(index="seed", columns="recipe", values=["valid_ndcg@10", "test_ndcg@10", "best_epoch"])
    for metric in ("valid_ndcg@10", "test_ndcg@10"):
        wide[(metric, "gain")] = wide[(metric, "change")] - wide[(metric, "baseline")]
    wide.columns = [f"{metric} {recipe}" for metric, recipe in wide.columns]
    medians = table.groupby("recipe")[["valid_ndcg@10", "test_ndcg@10", "best_epoch"]].median()
    mean_gain, low, high = gain_interval(runs, args.seeds)
    up = {m: int((wide[f"{m} gain"] > 0).sum()) for m in ("valid_ndcg@10", "test_ndcg@10")}

    data, sasrec, training = recipe_for(args.sequences)
    hardware = describe(args.threads, load_before)
    command = "PYTHONPATH=. python bench/bench_sasrec_recipes.py " + shlex.join(sys.argv[1:])
    record = {
        "hardware": hardware, "command": command, "data": data, "sasrec": sasrec, "training": dataclasses.asdict(training),
        "recipes": recipes, "wall_seconds": wall, "runs": runs,
        "test_gain_per_user": {"mean": mean_gain, "low": low, "high": high, "beyond_noise": beyond_noise(low, high)},
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    with atomic_path(RESULTS / f"sasrec_{args.name}.json") as path:
        path.write_text(json.dumps(record) + "\n")
    verdict = "beyond noise" if beyond_noise(low, high) else "within noise"
    text = (
        f"# SASRec on {data}: {recipes['change']} against {recipes['baseline'] or 'the recipe'}\n\n"
        f"{hardware['cpu_model']}, {hardware['cores']} cores, {args.jobs} training(s) at once on {args.threads} torch "
        f"thread(s) each, load average {hardware['load_average_before']} before, {hardware['load_average_after']} "
        f"after. SASRec {sasrec} and the training recipe {dataclasses.asdict(training)}, with the fields of "
        f"either replaced: baseline {recipes['baseline']}, change {recipes['change']}; leave-one-out, full ranking, "
        f"seen items filtered; the epoch with the best validation NDCG@10 kept. `{command}`\n\n"
        f"Per seed (gain = change - baseline):\n\n{wide.round(4).to_markdown()}\n\n"
        f"Medians over the seeds:\n\n{medians.round(4).to_markdown()}\n\n"
        f"Validation NDCG@10 up on {up['valid_ndcg@10']} of {len(args.seeds)} seeds, test NDCG@10 on "
        f"{up['test_ndcg@10']}. Mean test gain {mean_gain:+.4f}, 95 % interval [{low:+.4f}, {high:+.4f}] "
        f"(bootstrap redrawing the {len(args.seeds)} seeds and the {len(runs[0]['test_ndcg@10_per_user'])} test "
        f"users, recipes paired by seed and user): {verdict}.\n"
    )
    with atomic_path(RESULTS / f"sasrec_{args.name}.md") as path:
        path.write_text(text)


if __name__ == "__main__":
    main()
