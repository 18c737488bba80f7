"""Two model sets: a day is embedded by the newest model trained on or before it, so a retrain and the refresh that
follows never rebuild a past day with a later model; a model that learned nothing is left out of the profiles."""

from __future__ import annotations

import json

import dagster as dg

from tests.conftest import LAST_DAY, TINY, TRAIN_DAY
from ubp_pipeline.assets.embedders import embeddings_key, model_key
from ubp_pipeline.core.evaluation.backtest import check_leakage
from ubp_pipeline.runner import materialize

BLOCKS = ["statistics", "gru_day_event"]
LEARNS = {"max_epochs": 4, "learning_rate": 3e-3, "warmup_steps": 20}  # gru_day_event passes its check on the tiny set


def _train(defs, instance, day, overrides=LEARNS) -> None:
    config = {"ops": {model_key(name): {"config": {"training_day": day.isoformat(), "overrides": overrides}} for name in BLOCKS}}
    config["ops"][model_key("statistics")]["config"]["overrides"] = {}
    assert materialize(defs, [model_key(name) for name in BLOCKS], instance, run_config=config).success


def _embed_and_profile(defs, instance, day) -> dict:
    selection = [embeddings_key(name) for name in BLOCKS] + ["universal_profiles"]
    config = {"ops": {"universal_profiles": {"config": {"blocks": BLOCKS}}}}
    result = materialize(defs, selection, instance, partition=day, run_config=config)
    assert result.success
    return {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}


def _manifest(settings, day) -> dict:
    return json.loads((settings.artifact_dir / "universal_profiles" / day.isoformat() / "manifest.json").read_text())


def test_a_retrain_and_the_refresh_after_it_never_embed_a_past_day_with_a_later_model(tiny_defs, tiny_settings, instance):
    assert materialize(tiny_defs, "group:ingest", instance, partition_range=(TINY.start, LAST_DAY)).success
    for day in (TRAIN_DAY, LAST_DAY):
        assert materialize(tiny_defs, ["user_sequences", "stat_features"], instance, partition=day).success

    _train(tiny_defs, instance, TRAIN_DAY)  # the backtest models
    _embed_and_profile(tiny_defs, instance, TRAIN_DAY)
    _train(tiny_defs, instance, LAST_DAY)  # weekly_retrain: the production models, trained on the newest day
    refreshed = _embed_and_profile(tiny_defs, instance, TRAIN_DAY)  # what the refresh condition rebuilds
    newest = _embed_and_profile(tiny_defs, instance, LAST_DAY)

    for name in BLOCKS:
        assert refreshed[embeddings_key(name)]["training_cutoff"].value == TRAIN_DAY.isoformat()
        assert newest[embeddings_key(name)]["training_cutoff"].value == LAST_DAY.isoformat()
        assert (tiny_settings.artifact_dir / model_key(name) / TRAIN_DAY.isoformat()).is_dir()  # both sets kept
    past = _manifest(tiny_settings, TRAIN_DAY)
    assert {b["training_day"] for b in past["blocks"]} == {TRAIN_DAY.isoformat()}
    assert check_leakage(TRAIN_DAY, past, past["blocks"], allow_leakage=False) == []  # the backtest accepts it
    assert {b["training_day"] for b in _manifest(tiny_settings, LAST_DAY)["blocks"]} == {LAST_DAY.isoformat()}


def test_a_day_before_every_model_cannot_be_embedded(tiny_defs, instance):
    assert materialize(tiny_defs, "group:ingest", instance, partition_range=(TINY.start, LAST_DAY)).success
    assert materialize(tiny_defs, ["user_sequences", "stat_features"], instance, partition=LAST_DAY).success
    assert materialize(tiny_defs, ["user_sequences", "stat_features"], instance, partition=TRAIN_DAY).success
    _train(tiny_defs, instance, LAST_DAY)
    result = materialize(tiny_defs, embeddings_key("statistics"), instance, partition=TRAIN_DAY, raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert f"none on or before {TRAIN_DAY}" in message and f"trained on {LAST_DAY}" in message


def test_a_model_that_learned_nothing_is_left_out_of_the_profile_with_its_reason(tiny_defs, tiny_settings, instance):
    assert materialize(tiny_defs, "group:ingest", instance, partition_range=(TINY.start, TRAIN_DAY)).success
    assert materialize(tiny_defs, ["user_sequences", "stat_features"], instance, partition=TRAIN_DAY).success
    config = {"ops": {model_key(name): {"config": {"training_day": TRAIN_DAY.isoformat()}} for name in BLOCKS}}
    config["ops"][model_key("gru_day_event")]["config"]["overrides"] = {"learning_rate": 0.0, "max_epochs": 1}
    trained = materialize(tiny_defs, [model_key(n) for n in BLOCKS], instance, run_config=config, raise_on_error=False)
    assert [e.passed for e in trained.get_asset_check_evaluations()] == [False]

    metadata = _embed_and_profile(tiny_defs, instance, TRAIN_DAY)
    assert metadata[embeddings_key("gru_day_event")]["excluded"].value is True
    manifest = _manifest(tiny_settings, TRAIN_DAY)
    assert [b["name"] for b in manifest["blocks"]] == ["statistics"]
    assert "did no better than the marginal" in manifest["excluded_blocks"]["gru_day_event"]
    assert isinstance(metadata["universal_profiles"]["excluded_blocks"], dg.JsonMetadataValue)
