"""MovieLens-100k: does any SAE size steer genres, and how many features does a genre take?

Two questions behind the steering target (80 % of labels doubled within 10 % NDCG cost, bench/results/recommender.md):

1. **Dictionary size.** The bench's SAE (128 latents, k = 32) was chosen for readability. Each (expansion, k) of
   CONFIGS is trained on the same SASRec's residual stream after the last block, annotated on held-out users, and
   every label steered by the feature that writes it (add) and by its writers together (steering.py's modes).
2. **How sparse a genre is in the dictionary.** At SASRec's normalised output an edit moves every item's score by
   its dot product with the item's vector, for every user alike, so what a mix of features writes is the sum of
   what each writes. There the bench's SAE is trained, and each label steered by a nonnegative mix of the writes
   (at their largest activations) of at most m of all its reliable features, fitted by nonnegative least squares
   to the label's bonus (one point more for each of its items, as concept_direction is), the m chosen greedily;
   m = 1, 4, 8 and every reliable feature. The unconstrained fit (concept_direction) is the reference.

Every label is calibrated as in the steering report (smallest strength on the grid that doubles the label's share
of the top-10, bisected). Figures per seed and pooled over seeds, with a 95 % bootstrap interval over seeds and
labels. Seeds can run in separate processes (``--seeds``); each merges its runs into bench/results/sae_sweep.json
and rewrites bench/results/sae_sweep.md from every seed there (``--render`` only rewrites it).

    PYTHONPATH=. python bench/bench_sae_sweep.py [--seeds 0 1 2] [--threads 1] [--render]
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import time
from collections.abc import Collection

import numpy as np
import pandas as pd
import torch
from bench_recommender import RESULTS, SAE, SAE_HOLDOUT_USERS, SAE_TRAINING, SASREC, SASREC_TRAINING, pooled_difference
from hardware import describe, load_average
from scipy.optimize import nnls

from ubp_pipeline.core.common.atomic import atomic_path
from ubp_pipeline.core.common.device import TorchRuntime, make_runtime
from ubp_pipeline.core.recommender.annotation import reliable_features
from ubp_pipeline.core.recommender.hidden_edits import shift_edit
from ubp_pipeline.core.recommender.item_sequences import LeaveOneOutSplit, leave_one_out
from ubp_pipeline.core.recommender.ranking import evaluate_and_recommend, sasrec_scorer
from ubp_pipeline.core.recommender.stages import annotate_layer, train_dictionary, train_recommender
from ubp_pipeline.core.recommender.steering import (
    CONCEPT_DIRECTION,
    REFINE_STEPS,
    STRENGTH_GRID,
    WRITERS,
    concept_direction,
    feature_writes,
    reached_within_cost,
    score_spread,
    smallest_reaching,
    steering_report,
)
from ubp_pipeline.data.movielens import load_movielens_100k
from ubp_pipeline.models.sae import SAEConfig
from ubp_pipeline.models.sasrec import SASRec, SASRecConfig

STEM = "sae_sweep"
RECIPE = {"sasrec": SASREC, "sasrec_training": dataclasses.asdict(SASREC_TRAINING)}  # stored with every run
CONFIGS = [(2, 32), (2, 8), (8, 8), (8, 32), (16, 8)]  # (expansion, k); (2, 32) is the bench's
MIX_SIZES = (1, 4, 8, None)  # None = every reliable feature
READABILITY = ["median_best_auroc", "median_best_f1_over_chance", "median_monosemanticity", "reliable"]


def size_sweep(model: SASRec, split: LeaveOneOutSplit, runtime: TorchRuntime) -> list[dict]:
    """Per (expansion, k): the SAE's fit, its readability (next item) and which labels it steered within cost."""
    rows = []
    for expansion, k in CONFIGS:
        started = time.perf_counter()
        config = SAEConfig(d_in=model.config.d_model, expansion=expansion, k=k)
        dictionary = train_dictionary(
            model, split, model.config.n_blocks, config, SAE_TRAINING, runtime, holdout_users=SAE_HOLDOUT_USERS
        )
        annotations = annotate_layer(dictionary.sae, dictionary.holdout, split, subject="next", seed=runtime.seed)
        report = steering_report(
            model, dictionary.sae, dictionary.fit.layer, annotations.sae_features, split.test,
            modes=("add", WRITERS), device=runtime.device,
        )  # fmt: skip
        compared = annotations.comparison_by_subject.reset_index(names="family")
        next_item = compared[compared["subject"] == "next"].set_index("family")
        rows.append(
            {
                "expansion": expansion,
                "k": k,
                "n_latents": config.n_latents,
                "explained_variance": dictionary.fit.holdout["explained_variance"],
                "readability": {family: next_item.loc[family, READABILITY].to_dict() for family in ("sae", "hidden")},
                "steering": {mode: _outcomes(report[report["mode"] == mode]) for mode in ("add", WRITERS)},
                "seconds": time.perf_counter() - started,
            }
        )
    return rows


def label_sparsity(model: SASRec, split: LeaveOneOutSplit, runtime: TorchRuntime) -> dict:
    """At the output: each label of the bench's SAE there steered by nonnegative mixes of at most m of all its
    reliable features' writes (MIX_SIZES), and by concept_direction."""
    layer = model.output_layer
    config = SAEConfig(d_in=model.config.d_model, **SAE)
    dictionary = train_dictionary(model, split, layer, config, SAE_TRAINING, runtime, holdout_users=SAE_HOLDOUT_USERS)
    annotations = annotate_layer(dictionary.sae, dictionary.holdout, split, subject="next", seed=runtime.seed)
    reliable = reliable_features(annotations.sae_features)
    writes = feature_writes(dictionary.sae, reliable).cpu()
    with torch.no_grad():
        items = model.item_vectors()[1:].float().cpu()
    centred_items = items - items.mean(0)
    effects = (writes @ centred_items.T).numpy()  # (features, items): each write's change of every score
    sequences, device = split.test, runtime.device
    users = np.arange(sequences.n_users)

    def outcome(direction: torch.Tensor | None, multiple: float = 1.0) -> tuple[np.ndarray, float]:
        edit = None if direction is None else shift_edit(layer, multiple * direction.to(device))
        metrics, top = evaluate_and_recommend(sasrec_scorer(model, edit), sequences, users, device)
        return top, metrics["ndcg@10"]

    spread = score_spread(model, sequences, users, device)
    top_before, ndcg_before = outcome(None)
    rows = []
    for label in reliable.drop_duplicates("label")["label"]:
        carries = sequences.has_value(label)
        share_before = carries[top_before].mean()
        target = min(2 * max(share_before, 0.1), 1.0)  # as the steering report's
        bonus = carries[1:].astype(np.float64) - carries[1:].mean()
        candidates = {}
        for size in MIX_SIZES:
            weights = _fitted_mix(effects, bonus, size)
            mix = (torch.as_tensor(weights, dtype=torch.float32)[:, None] * writes).sum(0)
            candidates[f"mix of <= {size or 'all'}"] = (int((weights > 0).sum()), mix)
        candidates[CONCEPT_DIRECTION] = (None, concept_direction(model, carries).cpu())
        for name, (n_features, direction) in candidates.items():
            gain = _label_gain(centred_items @ direction, carries[1:])
            row = {"label": label, "steered_by": name, "n_features": n_features, "share_before": share_before,
                   "ndcg@10_before": ndcg_before}  # fmt: skip
            if gain <= 0:  # no mix: it cannot raise the label at any strength
                rows.append(row | {"reached_target": False, "relative_ndcg_cost": np.nan})
                continue
            unit = spread / gain * direction  # at multiple 1 the label's items gain one spread over the rest
            multiple, top, ndcg = smallest_reaching(
                lambda multiple: outcome(unit, multiple),  # noqa: B023 (called at once)
                lambda top: carries[top].mean() >= target,  # noqa: B023
                STRENGTH_GRID,
                REFINE_STEPS,
            )
            share_after = carries[top].mean()
            rows.append(row | {"strength_multiple": multiple, "share_after": share_after,
                               "reached_target": bool(share_after >= target), "ndcg@10_after": ndcg,
                               "relative_ndcg_cost": (ndcg_before - ndcg) / ndcg_before})  # fmt: skip
    steered = pd.DataFrame(rows)
    steered["reached_within_cost"] = reached_within_cost(steered)
    return {
        "explained_variance": dictionary.fit.holdout["explained_variance"],
        "reliable": len(reliable),
        "rows": steered.to_dict(orient="records"),
    }


def _label_gain(score_change: torch.Tensor, carries: np.ndarray) -> float:
    """How much more a change of the item scores raises the label's items than the rest, on average."""
    change = score_change.numpy()
    return float(change[carries].mean() - change[~carries].mean())


def _fitted_mix(effects: np.ndarray, bonus: np.ndarray, size: int | None) -> np.ndarray:
    """Nonnegative weights over the features (rows of ``effects``) whose weighted effect best fits ``bonus`` (least
    squares over the items). With a ``size``, at most that many nonzero, chosen greedily: each step adds the feature
    that, refitted with those kept, leaves the smallest residual, and drops any the refit sets to zero; it stops when
    ``size`` are kept or no feature lowers the residual."""
    if size is None:
        return nnls(effects.T, bonus, maxiter=50 * len(effects))[0]
    kept: list[int] = []
    weights = np.zeros(len(effects))
    residual = float(np.linalg.norm(bonus))
    while len(kept) < size:
        fits = {
            candidate: nnls(effects[[*kept, candidate]].T, bonus, maxiter=50 * (len(kept) + 1))
            for candidate in range(len(effects))
            if candidate not in kept
        }
        candidate, (fitted, left) = min(fits.items(), key=lambda item: item[1][1])
        if left >= residual * (1 - 1e-9):
            break
        picked = np.array([*kept, candidate])
        kept, residual = picked[fitted > 0].tolist(), left
        weights = np.zeros(len(effects))
        weights[picked] = fitted
    return weights


def _outcomes(report: pd.DataFrame) -> dict:
    """Per label of a steering report: whether it doubled its share within 10 % cost, and the cost."""
    return {
        "labels": report["label"].tolist(),
        "reached_within_cost": reached_within_cost(report).tolist(),
        "relative_ndcg_cost": report["relative_ndcg_cost"].tolist(),
    }


def run_seed(split: LeaveOneOutSplit, seed: int, threads: int) -> dict:
    """One SASRec (the bench's recipe and seed, so on the same recipe the (2, 32) row repeats recommender.md's), then
    both questions."""
    load_before = load_average()
    runtime = make_runtime("cpu", seed=seed, threads=threads)
    recommender = train_recommender(split, SASRecConfig(n_items=split.test.n_items, **SASREC), SASREC_TRAINING, runtime)
    model = recommender.trained.model
    test_ndcg = recommender.quality.set_index("model").loc["SASRec", "test_ndcg@10"]
    sizes, sparsity = size_sweep(model, split, runtime), label_sparsity(model, split, runtime)
    return {"seed": seed, **RECIPE, "sasrec_test_ndcg@10": test_ndcg, "sizes": sizes, "sparsity": sparsity,
            "hardware": describe(threads, load_before)}  # fmt: skip


def recipe_of(run: dict) -> str:
    """The SASRec settings and training recipe a run was measured with, as one comparable string."""
    return json.dumps({"sasrec": run["sasrec"], "training": run["sasrec_training"]}, sort_keys=True)


def refuse_other_recipes(kept: list[dict], adding: list[dict]) -> None:
    """One page describes one recipe: the stored runs kept beside ``adding`` must share its recipe."""
    recipes = {recipe_of(run) for run in adding + kept}
    if len(recipes) > 1:
        raise SystemExit(
            f"{STEM}.json holds runs of another SASRec recipe ({' vs '.join(sorted(recipes))}): move it aside and "
            "run every seed"
        )


def merge_and_render(runs: list[dict], replacing: Collection[int] = ()) -> None:
    """Add ``runs`` to the results JSON and rewrite the page from every seed there. A rerun of a seed replaces it;
    stored runs of another recipe whose seeds are in ``replacing`` (this invocation's, still to come) are dropped, so
    that a new recipe can replace every seed one by one. The lock (on this script, so no lock file is left behind)
    lets seeds run in parallel processes."""
    path = RESULTS / f"{STEM}.json"
    with open(__file__) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(path.read_text()) if path.exists() else {"runs": []}
        recipes = {recipe_of(run) for run in runs}
        kept = [  # a stored run stays unless rerun now, or of another recipe and to be rerun
            run for run in report["runs"]
            if run["seed"] not in {new["seed"] for new in runs}
            and not (run["seed"] in replacing and recipe_of(run) not in recipes)
        ]  # fmt: skip
        refuse_other_recipes(kept, runs)
        report["runs"] = sorted(kept + runs, key=lambda r: r["seed"])
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
        with atomic_path(RESULTS / f"{STEM}.md") as tmp:
            tmp.write_text(render(report))


def per_seed(hits: list[np.ndarray]) -> str:
    """'2/8, 0/8, ...': labels within 10 % cost of each seed."""
    return ", ".join(f"{seed_hits.sum()}/{len(seed_hits)}" for seed_hits in hits)


def versus(first: list[np.ndarray], second: list[np.ndarray], paired: bool) -> str:
    """``pooled_difference`` of two sides' hits as 'difference [low, high], within/beyond noise'."""
    result = pooled_difference({"first": first, "second": second}, paired=paired)
    low, high = result["interval_95"]
    return f"{result['difference']:+.2f} [{low:+.2f}, {high:+.2f}], {'beyond' if result['beyond_noise'] else 'within'}"


def render(report: dict) -> str:
    """The results page: the size table, the hidden dimensions once, the mixes table and their comparisons."""
    runs = report["runs"]
    sizes_of: dict[tuple[int, int], list[dict]] = {}
    for run in runs:
        for size in run["sizes"]:
            sizes_of.setdefault((size["expansion"], size["k"]), []).append(size)
    default = [size["steering"]["add"] for size in sizes_of[CONFIGS[0]]]

    def hits(outcomes: list[dict]) -> list[np.ndarray]:
        return [np.array(outcome["reached_within_cost"], dtype=bool) for outcome in outcomes]

    size_rows = []
    for (expansion, k), sizes in sizes_of.items():
        row = {"expansion": expansion, "k": k, "latents": sizes[0]["n_latents"],
               "explained_variance": np.median([s["explained_variance"] for s in sizes])}  # fmt: skip
        for key in READABILITY:
            row[key.removeprefix("median_")] = np.median([s["readability"]["sae"][key] for s in sizes])
        row["reliable"] = int(row["reliable"])
        for mode in ("add", WRITERS):
            outcomes = hits([s["steering"][mode] for s in sizes])
            row[f"{mode}: labels within 10 % cost"] = per_seed(outcomes)
            row[f"{mode}: pooled"] = float(np.concatenate(outcomes).mean())
        add = hits([s["steering"]["add"] for s in sizes])
        row["add: minus (2, 32)"] = "" if (expansion, k) == CONFIGS[0] else versus(add, hits(default), paired=False)
        size_rows.append(row)
    hidden = {key: np.median([s["readability"]["hidden"][key] for s in sizes_of[CONFIGS[0]]]) for key in READABILITY}

    mixes = pd.DataFrame([row | {"seed": run["seed"]} for run in runs for row in run["sparsity"]["rows"]])
    hits_by, mix_rows = {}, []
    for name, rows in mixes.groupby("steered_by", sort=False):
        hits_by[name] = [group["reached_within_cost"].to_numpy(dtype=bool) for _, group in rows.groupby("seed")]
        mix_rows.append({"steered by": name, "labels within 10 % cost": per_seed(hits_by[name]),
                         "pooled": float(rows["reached_within_cost"].mean()),
                         "median features used": rows["n_features"].median(),
                         "median relative NDCG cost": float(rows["relative_ndcg_cost"].median())})  # fmt: skip
    comparisons = [
        ("every feature minus at most 8", "mix of <= all", "mix of <= 8"),
        ("every feature minus concept_direction", "mix of <= all", CONCEPT_DIRECTION),
        ("at most 8 minus concept_direction", "mix of <= 8", CONCEPT_DIRECTION),
    ]
    hardware = "; ".join(
        f"seed {run['seed']}: {hw['cpu_model']}, {hw['cores']} cores, {hw['threads']} torch thread(s), torch "
        f"{hw['torch']}, load average {hw['load_average_before']} before, {hw['load_average_after']} after"
        for run in runs
        for hw in [run["hardware"]]
    )
    ndcgs = ", ".join(f"{run['sasrec_test_ndcg@10']:.4f}" for run in runs)
    lines = [
        "# Does any SAE size steer genres, and how many features does a genre take? (MovieLens-100k)",
        "",
        f"`bench_sae_sweep.py`. {hardware} (shared machine). SASRec {runs[0]['sasrec']}, trained with "
        f"{runs[0]['sasrec_training']}, the same seeds (test NDCG@10 {ndcgs}); {SAE_HOLDOUT_USERS:.0%} of users "
        "held out for annotation; NDCG@10 and top-10 shares on all 943 users' test items. A label counts when its "
        "share of the top-10 lists doubled (to at least 0.2) at no more than 10 % relative NDCG@10 cost, as in the "
        "steering report; pooled = over every seed's labels; "
        "differences with a 95 % bootstrap interval over seeds and labels.",
        "",
        "## SAE size, on the residual stream after the last block (the bench's place)",
        "",
        "Readability of the next item (medians over an SAE's reliable features, then over seeds); each label steered "
        "by the feature that writes it (add) or by its writers together (writers), as in recommender.md. The labels "
        "are each SAE's own, so their number differs; the last column compares each size with the bench's (2, 32), "
        "unpaired (four comparisons, no correction for their number).",
        "",
        pd.DataFrame(size_rows).to_markdown(index=False, floatfmt=".3f"),
        "",
        "The hidden dimensions of the same layer, for comparison (the same in every row): "
        + ", ".join(
            f"{key.removeprefix('median_')} {value:.0f}"
            if key == "reliable"
            else f"{key.removeprefix('median_')} {value:.3f}"
            for key, value in hidden.items()
        )
        + ".",
        "",
        "## How many features a genre takes, at the output",
        "",
        f"The bench's SAE ({SAE}) trained on SASRec's normalised output (reliable features, median over seeds: "
        f"{np.median([run['sparsity']['reliable'] for run in runs]):.0f}; explained variance "
        f"{np.median([run['sparsity']['explained_variance'] for run in runs]):.3f}). There an edit moves every item's "
        "score by its dot product with the item's vector, the same for every user, so a mix of features writes the "
        "sum of their writes (a feature's write: its decoder column times its largest activation; nonnegative "
        "mixes, since a TopK feature's activation cannot go below zero). Each label is steered by a mix of the writes "
        "of at most m of all the reliable features, fitted by nonnegative least squares to the label's "
        "bonus (one point more for each of its items, centred), the m chosen greedily (each step adds the feature "
        "that leaves the smallest residual, all refitted; a feature the refit sets to zero is dropped); 'all' allows "
        "any number of them (still nonnegative); concept_direction is the direction with no constraint "
        "(recommender.md), so no feature count. The count for 'all' is the solver's, not the fewest a fit as good "
        f"needs: the writes live in the model's {SASREC['d_model']} dimensions, so one with at most "
        f"{SASREC['d_model']} exists. Each direction is scaled so that at multiple 1 the label's items "
        "gain one median spread of a user's scores over the rest, then calibrated as the steering report does; a mix "
        "that cannot raise the label (no feature's write does) is not steered and counts as a miss.",
        "",
        pd.DataFrame(mix_rows).to_markdown(index=False, floatfmt=".3f"),
        "",
        "Paired differences in the share of labels doubled within cost (the same labels): "
        + "; ".join(
            f"{title} {versus(hits_by[first], hits_by[second], paired=True)} noise"
            for title, first, second in comparisons
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render", action="store_true", help="only rewrite sae_sweep.md from sae_sweep.json")
    args = parser.parse_args()
    if args.render:
        merge_and_render([])
    else:
        stored = RESULTS / f"{STEM}.json"
        stored_runs = json.loads(stored.read_text())["runs"] if stored.exists() else []
        refuse_other_recipes([run for run in stored_runs if run["seed"] not in args.seeds], [RECIPE])  # before training
        split = leave_one_out(load_movielens_100k())
        for seed in args.seeds:  # merged one by one: a later seed's failure keeps the earlier ones
            merge_and_render([run_seed(split, seed, args.threads)], replacing=args.seeds)
    print((RESULTS / f"{STEM}.md").read_text())


if __name__ == "__main__":
    main()
