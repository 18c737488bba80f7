"""What the main job printed at the end: counts, sequence statistics and where every result lives."""

import json
import sys
from pathlib import Path
from shlex import quote

import pandas as pd

from ubp_pipeline.assets.evaluation import PROFILE_EVALUATION
from ubp_pipeline.assets.interpretability import SAE_DICTIONARY, SAE_FEATURE_ANNOTATIONS, STEERING_REPORT
from ubp_pipeline.assets.profiles import UNIVERSAL_PROFILES
from ubp_pipeline.assets.recommender import SASREC_MODEL
from ubp_pipeline.assets.sequences import USER_SEQUENCES
from ubp_pipeline.core.common.checkpoint import CONFIG_FILE
from ubp_pipeline.core.common.sql import run_sql
from ubp_pipeline.core.profiles.assembly import MANIFEST_FILE
from ubp_pipeline.core.recommender.steering import REFERENCES
from ubp_pipeline.core.recommender.store import COMPARISON_FILE, STEERING_FILE, load_steering_report
from ubp_pipeline.core.sequences.user_sequences import read_manifest
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.pipeline import BACKTEST_HORIZON_DAYS, PipelineRuns, as_of_days, backtest_day
from ubp_pipeline.settings import Settings, default_home


def _relative(path) -> str:
    try:
        return str(path.relative_to(path.cwd()))
    except ValueError:
        return str(path)


def _reach_again(settings: Settings, command: str, source_flag: str = "--source ") -> str:
    """``command`` run on this run's source and home again: with the source (unless the demo's) and, where the home
    is not the source's default, UBP_HOME before it."""
    own_home = settings.home != default_home(settings.source_dir).resolve()
    home = f"UBP_HOME={quote(str(settings.home))} " if own_home else ""
    source = "" if settings.is_demo else f" {source_flag}{quote(str(settings.source_dir))}"
    return f"{home}{command}{source}"


def _ubp(settings: Settings, command: str) -> str:
    """This environment's `ubp` with ``command``, on this run's data."""
    return _reach_again(settings, f"{_relative(Path(sys.executable).parent / 'ubp')} {command}")


def print_summary(settings: Settings, runs: PipelineRuns, seconds: float) -> None:
    print()
    print(f"ubp_pipeline: {settings.first_day} .. {settings.last_day}, {len(runs.run_ids)} Dagster runs, {seconds:.1f} s")
    print(f"source     {_relative(settings.source_dir)}")
    print(f"warehouse  {_relative(settings.warehouse_path)}")
    print(f"  {'table':<20} {'accepted':>12} {'users':>9} {'days':>5} {'quarantined':>12}")
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        for source, accepted, users, days, quarantined in run_sql(con, "warehouse/warehouse_summary").fetchall():
            users_text = f"{users:,}" if users is not None else "-"
            days_text = str(days) if days is not None else "-"
            print(f"  {source:<20} {accepted:>12,} {users_text:>9} {days_text:>5} {quarantined:>12,}")
    print("user_sequences (as of the end of the day)")
    for day in as_of_days(settings):
        folder = settings.artifact_dir / USER_SEQUENCES / day.isoformat()
        stats = read_manifest(folder)["stats"]
        print(
            f"  {day}  {stats['users']:>8,} users  {stats['events_kept']:>11,} events  length p50 {stats['length_p50']:.0f}"
            f" p90 {stats['length_p90']:.0f} max {stats['length_max']}  {_relative(folder)}"
        )
    print("universal_profiles (client_ids.npy + embeddings.npy in the challenge layout, profiles.parquet, manifest.json)")
    for day in as_of_days(settings):
        folder = settings.artifact_dir / UNIVERSAL_PROFILES / day.isoformat()
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        cutoffs = sorted({b.get("training_day", "") for b in manifest["blocks"]})
        print(f"  {day}  {manifest['users']:>8,} users x {manifest['dims']} dims  {_relative(folder)}")
        print("    blocks: " + ", ".join(f"{b['name']} {b['dims']}d ({b['coverage']:.0%} covered)" for b in manifest["blocks"]))
        print(f"    models trained on {', '.join(cutoffs)} ({manifest.get('block_selection', {}).get('source', '')})")
        for name, reason in manifest.get("excluded_blocks", {}).items():
            print(f"    left out: {name}: {reason}")
    print(f"  models: {_relative(settings.artifact_dir)}/<block>_model/<training cutoff>/")
    print(f"  for the challenge's evaluator: {_ubp(settings, 'export --day <day>')}")
    _print_evaluation(settings)
    _print_recommender(settings)
    make_ui = _reach_again(settings, "make ui", source_flag="SOURCE=")
    print(f"Open the Dagster UI with `{make_ui}` (http://127.0.0.1:3000): assets, partitions, lineage and runs.")


def _print_evaluation(settings: Settings) -> None:
    day = backtest_day(settings)
    if day is None:
        print(f"profile_evaluation: none (the data has no day with a complete {BACKTEST_HORIZON_DAYS}-day future)")
        return
    folder = settings.artifact_dir / PROFILE_EVALUATION / day.isoformat()
    print(f"profile_evaluation as of {day} (scores; chart {_relative(folder / 'scores.png')})")
    for line in (folder / "scores.md").read_text().splitlines():
        print(f"  {line}")


def _print_recommender(settings: Settings) -> None:
    """Test quality next to the baselines and which model is served, the SAE's fidelity, SAE features vs hidden
    dimensions, one steering example."""
    artifacts = settings.artifact_dir
    if not (artifacts / SASREC_MODEL / CONFIG_FILE).exists():
        print("sasrec_model: not trained (too little product data on the training day; see the run's log)")
        return
    model = json.loads((artifacts / SASREC_MODEL / CONFIG_FILE).read_text())
    m = model["metrics"]
    print(
        f"sasrec_model (trained on {model['training_day']}: {m['users']:,} users, {m['items']:,} skus, "
        f"{m['training_seconds']:.0f} s on {model['device']})  {_relative(artifacts / SASREC_MODEL)}"
    )
    print(
        f"  leave-one-out test NDCG@10: SASRec {m['test_ndcg@10']:.4f}, popularity {m['popularity_ndcg@10']:.4f}, "
        f"item-to-item {m['item_to_item_ndcg@10']:.4f}, blend {m['blend_ndcg@10']:.4f}; "
        f"`ubp recommend` serves {model.get('served_model', 'SASRec')} (best on validation)"
    )
    later_stages = [
        artifacts / SAE_DICTIONARY / CONFIG_FILE,
        artifacts / SAE_FEATURE_ANNOTATIONS / COMPARISON_FILE,
        artifacts / STEERING_REPORT / STEERING_FILE,
    ]
    if not all(path.exists() for path in later_stages):
        print("  sae_dictionary, annotations, steering: not all built (see the run's log)")
        return
    fit = json.loads((artifacts / SAE_DICTIONARY / CONFIG_FILE).read_text())["fit"]
    holdout, fidelity = fit["holdout"], fit["fidelity"]
    recovered = fidelity["ndcg_recovered"]
    recovered = "undefined: mean-ablating the layer costs almost nothing" if recovered != recovered else f"{recovered:.0%}"
    print(
        f"  sae_dictionary (layer {fit['layer']}, {fit['n_latents']} latents, k {fit['k']}): explained variance "
        f"{holdout['explained_variance']:.3f}, L0 {holdout['l0']:.1f}, dead {holdout['dead_fraction']:.1%} of latents "
        f"on {holdout['tokens']:,.0f} held-out tokens{_silent_by_chance(holdout)}; NDCG@10 spliced "
        f"{fidelity['ndcg@10_sae']:.4f} (recovered vs mean ablation: {recovered})"
    )
    comparison = pd.read_parquet(artifacts / SAE_FEATURE_ANNOTATIONS / COMPARISON_FILE)
    sae, hidden = comparison.loc["sae"], comparison.loc["hidden"]
    print(
        f"  monosemanticity, median over reliable features: SAE {sae['median_monosemanticity']:.3f} "
        f"({sae['reliable']:.0f} features) vs hidden dimensions {hidden['median_monosemanticity']:.3f} "
        f"({hidden['reliable']:.0f})"
    )
    steering = load_steering_report(artifacts / STEERING_REPORT)
    if steering.empty:
        print("  steering: no feature fired often enough to steer by")
        return
    by_feature = steering[steering["mode"].isin(["add", "clamp"])]  # what `ubp recommend --steer` does: one feature
    if by_feature.empty:
        print(f"  steering: modes {sorted(steering['mode'].unique())} only (add or clamp steer by one feature)")
        return
    best = by_feature.loc[(by_feature["share_after"] - by_feature["share_before"]).idxmax()]
    example = steering[steering["label"] == best["label"]]  # its feature's modes, then the references
    moves = ", ".join(
        f"{r.mode} {r.share_after:.2f} at {r.strength_multiple:.2g}x (NDCG@10 {-r.ndcg_cost:+.4f})"
        for r in example.itertuples()
    )
    print(
        f"  steering {best['label']} by feature {best['feature']} (the largest effect of "
        f"{by_feature['label'].nunique()} steered labels; {' and '.join(REFERENCES)} are references): its top-10 "
        f"share {best['share_before']:.2f} -> {moves}"
    )
    steer = f"recommend --client {_example_client(settings)} --steer {best['label']}=4"
    print(f"  try it: {_ubp(settings, steer)}")


def _example_client(settings: Settings) -> str:
    """A client `ubp recommend` serves from the newest sequences: the busiest buyer of their window."""
    with connect_warehouse(settings.warehouse_path, read_only=True) as con:
        found = run_sql(
            con, "warehouse/busiest_buyer", as_of=settings.last_day, lookback_days=settings.lookback_days
        ).fetchone()
    return str(found[0]) if found else "<client_id>"


def _silent_by_chance(holdout: dict) -> str:
    """How many of the silent latents are only rare (a dictionary fitted before the yardsticks has neither)."""
    if "silent_fraction_expected" not in holdout:
        return ""
    return (
        f" ({holdout['silent_fraction_expected']:.1%} expected silent there at their training firing rates; "
        f"{holdout['dead_on_training_tokens']:.1%} never fire on training tokens)"
    )
