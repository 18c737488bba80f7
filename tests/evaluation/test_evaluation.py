"""The backtest through Dagster on a small fixed synthetic set: the quality it must keep, intervals, the block
selection and who may use it, refusals."""

from __future__ import annotations

import json
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pytest

from tests.factories import settings_for
from ubp_pipeline.assets.embedders import model_key
from ubp_pipeline.core.evaluation.backtest import LeakageError, check_leakage
from ubp_pipeline.core.profiles.registry import default_blocks
from ubp_pipeline.data.synthetic import SyntheticConfig, generate
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.pipeline import train_models, trained_blocks
from ubp_pipeline.runner import materialize

CONFIG = SyntheticConfig(users=1200, days=56, seed=3, start=date(2022, 6, 23))
# The quick probe throughout: these tests check the backtest's mechanics and margins, not the official ranking.
# Stated margins. A probe that learned nothing scores AUROC 0.5, at most 0.8 * 0.5 + 0.1 + 0.1 = 0.6 on a propensity
# task (novelty and diversity are at most 1), so at most 2 * 0.5 + 4 * 0.6 = 3.4 in total over the six tasks.
CHANCE_TOTAL_CEILING = 3.4
ORACLE_OVER_CHANCE = 0.3  # the planted truth's total, lower bound of its interval, clears that ceiling by this much
ENSEMBLE_OVER_BASELINE = 0.1  # the ensemble's total over the challenge's raw aggregated-features baseline
LAST = CONFIG.start + timedelta(days=CONFIG.days - 1)
D = LAST - timedelta(days=28)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Ingested data, inputs of D and D+5, and a Dagster instance shared by the tests of this module."""
    root = tmp_path_factory.mktemp("evaluation")
    generate(CONFIG, root / "source")
    settings = settings_for(root / "source", root / "home", CONFIG.start, LAST)
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize(defs, "group:ingest", instance, partition_range=(CONFIG.start, LAST)).success
        for day in (D, D + timedelta(days=5)):
            assert materialize(defs, ["user_sequences", "stat_features"], instance, partition=day).success
        yield settings, defs, instance


def _train_models(defs, instance, day: date) -> None:
    """Models trained with their cutoff at ``day`` (skipped when they already are), and the profiles of D."""
    events = [instance.get_latest_materialization_event(dg.AssetKey(model_key(name))) for name in trained_blocks(defs)]
    cutoffs = {e and e.asset_materialization.metadata["training_cutoff"].value for e in events}
    if cutoffs == {day.isoformat()}:
        return
    train_models(defs, instance, day)  # as the main job does: a block that fails its field check is left out
    assert materialize(defs, ["group:embeddings", "group:profiles"], instance, partition=D).success


def test_the_ensemble_beats_the_baseline_and_the_oracle_beats_chance_beyond_noise(world):
    settings, defs, instance = world
    _train_models(defs, instance, D)
    config = {"ops": {"profile_evaluation": {"config": {"score_blocks": False, "probe": "quick"}}}}
    result = materialize(defs, "group:evaluation", instance, partition=D, run_config=config)
    assert result.success
    folder = settings.artifact_dir / "profile_evaluation" / D.isoformat()
    scores = pd.read_parquet(folder / "scores.parquet")
    assert list(dict.fromkeys(scores["row"])) == ["ensemble", "baseline", "baseline_scaled", "oracle"]
    assert list(dict.fromkeys(scores["task"])) == [
        "churn", "conversion", "propensity_category", "propensity_sku", "propensity_price", "propensity_new_sku", "total",
    ]
    assert (scores["score_lower"] <= scores["score"]).all() and (scores["score"] <= scores["score_upper"]).all()
    total = scores[scores["task"] == "total"].set_index("row")
    print(total[["score", "score_lower", "score_upper", "diff_lower", "diff_upper", "beyond_noise"]])

    assert total.loc["oracle", "score_lower"] >= CHANCE_TOTAL_CEILING + ORACLE_OVER_CHANCE
    baseline = total.loc["baseline"]  # its difference to the ensemble: baseline - ensemble
    assert total.loc["ensemble", "score"] - baseline["score"] >= ENSEMBLE_OVER_BASELINE
    assert baseline["beyond_noise"] and baseline["diff_upper"] < 0

    metadata = result.asset_materializations_for_node("profile_evaluation")[0].metadata
    assert metadata["ensemble_total"].value == pytest.approx(total.loc["ensemble", "score"])
    assert metadata["ensemble_total_lower"].value < metadata["ensemble_total"].value < metadata["ensemble_total_upper"].value
    assert metadata["baseline_total_beyond_noise"].value is True
    assert "ensemble | " in metadata["scores"].value and "▼" in metadata["scores"].value
    assert (folder / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "selected_blocks" not in metadata  # no block rows, no selection


def test_the_selection_is_recorded_and_shapes_only_profiles_after_its_evidence(world):
    settings, defs, instance = world
    _train_models(defs, instance, D)
    evaluation = {"select_blocks": "always", "score_blocks": True, "bootstrap_replicates": 100, "probe": "quick"}
    config = {"ops": {"profile_evaluation": {"config": evaluation}}}
    result = materialize(defs, "profile_evaluation", instance, partition=D, run_config=config)
    assert result.success
    selection = json.loads((settings.artifact_dir / "profile_evaluation" / D.isoformat() / "selection.json").read_text())
    best_single = max((t for t in selection["trials"] if t["round"] == 0), key=lambda t: t["total"])
    chosen = next(t for t in reversed(selection["trials"]) if t["accepted"])
    assert chosen["blocks"] == selection["blocks"] and chosen["total"] >= best_single["total"]
    assert selection["evidence_until"] == LAST.isoformat()

    profiles = settings.artifact_dir / "universal_profiles"
    assert materialize(defs, ["universal_profiles"], instance, partition=D).success
    own = json.loads((profiles / D.isoformat() / "manifest.json").read_text())
    assert own["block_selection"]["source"].startswith("the default blocks")  # D's own profile never uses D's selection
    assert [b["name"] for b in own["blocks"]] == [name for name in default_blocks() if name not in own["excluded_blocks"]]

    assert materialize(defs, ["user_sequences", "stat_features"], instance, partition=LAST).success
    assert materialize(defs, ["group:embeddings", "group:profiles"], instance, partition=LAST).success
    newest = json.loads((profiles / LAST.isoformat() / "manifest.json").read_text())
    assert [b["name"] for b in newest["blocks"]] == selection["blocks"]
    assert newest["block_selection"]["decided_on"] == D.isoformat()


def test_a_day_without_a_complete_future_cannot_be_evaluated(world):
    _, defs, instance = world
    result = materialize(defs, "downstream_targets", instance, partition=D + timedelta(days=5), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "has no complete 28-day future" in failure and f"newest day that can be evaluated is {D}" in failure


def test_models_trained_after_the_day_never_reach_its_evaluation(world):
    """A retrain after D (the production models) leaves D's backtest models in place: D's profile, rebuilt after the
    retrain, is still embedded by models trained on D, and the evaluation accepts it. A profile that did carry a
    later model would be refused."""
    settings, defs, instance = world
    _train_models(defs, instance, D)
    _train_models(defs, instance, D + timedelta(days=5))
    assert materialize(defs, ["group:embeddings", "group:profiles"], instance, partition=D).success
    manifest = json.loads((settings.artifact_dir / "universal_profiles" / D.isoformat() / "manifest.json").read_text())
    assert {b["training_day"] for b in manifest["blocks"]} == {D.isoformat()}
    config = {"ops": {"profile_evaluation": {"config": {"probe": "quick"}}}}
    assert materialize(defs, "profile_evaluation", instance, partition=D, run_config=config).success

    later = {**manifest, "blocks": [{**manifest["blocks"][0], "training_day": (D + timedelta(days=5)).isoformat()}]}
    with pytest.raises(LeakageError, match=f"were trained on data after {D}"):
        check_leakage(D, later, [], allow_leakage=False)
