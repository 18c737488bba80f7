"""MovieLens-100k: SASRec alone, trained with and without label smoothing, on more seeds than the full report runs.

bench_recommender.py trains SASRec with seeds 0-2 inside the whole interpretability report; this trains only SASRec
(its recipe there, with the label-smoothing share replaced) for the seeds and shares given, and reports validation
and test NDCG@10 per seed and the paired difference to the first share. The epoch is chosen on validation.
Writes bench/results/sasrec_smoothing.json and .md.

    PYTHONPATH=. python bench/bench_sasrec_smoothing.py [--seeds 3 4 5] [--shares 0 0.1] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
from bench_recommender import SASREC, SASREC_TRAINING
from hardware import describe, load_average

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import make_runtime
from ubp_pipeline.core.recommender.item_sequences import leave_one_out
from ubp_pipeline.core.recommender.ranking import evaluate_full_ranking, sasrec_scorer
from ubp_pipeline.core.recommender.sasrec_training import train_sasrec
from ubp_pipeline.data.movielens import load_movielens_100k
from ubp_pipeline.models.sasrec import SASRecConfig

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    load_before = load_average()
    split = leave_one_out(load_movielens_100k())
    rows = []
    for share in args.shares:
        training = dataclasses.replace(SASREC_TRAINING, label_smoothing=share)
        for seed in args.seeds:
            runtime = make_runtime("cpu", seed=seed, threads=args.threads)
            started = time.perf_counter()
            trained = train_sasrec(split, SASRecConfig(n_items=split.test.n_items, **SASREC), training, runtime)
            test = evaluate_full_ranking(sasrec_scorer(trained.model), split.test)
            rows.append({
                "label_smoothing": share, "seed": seed, "best_epoch": trained.best_epoch,
                "valid_ndcg@10": max(trained.history.series("valid_ndcg@10")), "test_ndcg@10": test["ndcg@10"],
                "seconds": time.perf_counter() - started,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    runs = pd.DataFrame(rows)
    wide = runs.pivot(index="seed", columns="label_smoothing", values=["valid_ndcg@10", "test_ndcg@10"])
    first = args.shares[0]
    for metric in ("valid_ndcg@10", "test_ndcg@10"):
        for share in args.shares[1:]:
            wide[(f"{metric} gain", share)] = wide[(metric, share)] - wide[(metric, first)]
    wide.columns = [f"{metric} @ {share:g}" for metric, share in wide.columns]
    medians = runs.groupby("label_smoothing")[["valid_ndcg@10", "test_ndcg@10"]].median()
    hardware = describe(args.threads, load_before)
    RESULTS.mkdir(exist_ok=True)
    record = {"hardware": hardware, "sasrec": SASREC, "training": dataclasses.asdict(SASREC_TRAINING), "runs": rows}
    with atomic_path(RESULTS / "sasrec_smoothing.json") as path:
        path.write_text(json.dumps(record, indent=2) + "\n")
    text = (
        "# SASRec on MovieLens-100k with and without label smoothing\n\n"
        f"{hardware['cpu_model']}, {hardware['cores']} cores, {args.threads} torch thread(s), load average "
        f"{hardware['load_average_before']} before, {hardware['load_average_after']} after. SASRec {SASREC}, the training recipe of "
        f"bench_recommender.py with label_smoothing replaced; leave-one-out, full ranking, seen items filtered; the "
        f"epoch with the best validation NDCG@10 kept. `PYTHONPATH=. python bench/bench_sasrec_smoothing.py "
        f"--seeds {' '.join(map(str, args.seeds))} --shares {' '.join(f'{s:g}' for s in args.shares)}`\n\n"
        f"Per seed (gain = the share's figure minus that of label_smoothing {first:g}):\n\n"
        f"{wide.round(4).to_markdown()}\n\nMedians over the seeds:\n\n{medians.round(4).to_markdown()}\n"
    )
    with atomic_path(RESULTS / "sasrec_smoothing.md") as path:
        path.write_text(text)


if __name__ == "__main__":
    main()
