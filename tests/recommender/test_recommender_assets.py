"""The interpretable recommender: sku sequences from a hand-made source, the four assets through Dagster on the tiny
data set, and `ubp recommend` steering toward a category."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import dagster as dg
import numpy as np
import pytest
import torch

from tests.conftest import LAST_DAY, TINY
from tests.factories import codes, settings_for, write_source
from ubp_pipeline.cli import main
from ubp_pipeline.core.recommender.sae_training import collect_hidden_states
from ubp_pipeline.core.recommender.sku_sequences import SkuSequenceOptions, build_sku_sequences, sku_sequences_over
from ubp_pipeline.core.recommender.store import load_annotations, load_dictionary, load_recommender
from ubp_pipeline.core.sequences.user_sequences import SequenceSpec, build_sequences
from ubp_pipeline.core.warehouse.database import connect_warehouse
from ubp_pipeline.core.warehouse.events import EVENT_TYPES
from ubp_pipeline.core.warehouse.ingest import ingest_event_tables, ingest_product_properties
from ubp_pipeline.core.warehouse.source_layout import SourceLayout
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.resources import TorchDevice
from ubp_pipeline.runner import materialize
from ubp_pipeline.settings import Settings

# catalogue (tests.factories): sku 10 -> category 1, price 5; 11 -> 1, 50; 12 -> 2, 60; 13 -> 3, 99
HAND_MADE_EVENTS = {
    "add_to_cart": [(1, "2022-07-01 10:00:00", 10), (1, "2022-07-01 10:05:00", 12), (2, "2022-07-02 09:00:00", 11)],
    "product_buy": [(1, "2022-07-01 10:01:00", 10), (2, "2022-07-02 09:30:00", 12), (2, "2022-07-03 09:00:00", 13)],
    "remove_from_cart": [(1, "2022-07-02 11:00:00", 13)],
    "page_visit": [(1, "2022-07-01 09:00:00", 500)],
    "search_query": [(2, "2022-07-01 08:00:00", codes(1))],
}


def _sequences_partition(tmp_path, events: dict) -> str:
    """A user_sequences folder as of 2022-07-03 built from ``events`` by the core functions (no Dagster)."""
    layout = SourceLayout(write_source(tmp_path / "source", events))
    first, as_of = date(2022, 7, 1), date(2022, 7, 3)
    with connect_warehouse(tmp_path / "warehouse.duckdb") as con:
        ingest_product_properties(con, layout)
        ingest_event_tables(con, layout, EVENT_TYPES, first, as_of)
        build_sequences(con, SequenceSpec(as_of=as_of, first_day=first), tmp_path / "sequences")
    return tmp_path / "sequences"


def _skus(sequences) -> dict[int, list[int]]:
    return {int(u): sequences.item_ids[sequences.sequence(i) - 1].tolist() for i, u in enumerate(sequences.user_ids)}


def _built(folder, **options) -> dict[int, list[int]]:
    return _skus(build_sku_sequences(folder, SkuSequenceOptions(**{"min_item_count": 1, "min_length": 1, **options})))


def test_sku_sequences_are_product_events_in_time_order_with_category_and_price_band(tmp_path):
    folder = _sequences_partition(tmp_path, HAND_MADE_EVENTS)
    assert _built(folder) == {1: [10, 12, 13], 2: [11, 12, 13]}  # cart 10 + buy 10 collapsed; visits, searches out
    assert _built(folder, collapse_repeats=False) == {1: [10, 10, 12, 13], 2: [11, 12, 13]}
    assert _built(folder, buys_and_carts_only=True) == {1: [10, 12], 2: [11, 12, 13]}
    assert _built(folder, min_item_count=2, min_length=2) == {1: [12, 13], 2: [12, 13]}  # 10 and 11 occur once
    assert _built(folder, buys_and_carts_only=True, min_length=3) == {2: [11, 12, 13]}

    sequences = build_sku_sequences(folder, SkuSequenceOptions(min_item_count=1, min_length=1))
    index = {int(sku): i + 1 for i, sku in enumerate(sequences.item_ids)}
    skus = [index[10], index[11], index[12], index[13]]
    assert sequences.item_names[index[13]] == "sku 13 (category 3, price 99)"
    assert sequences.has_value("category:1")[skus].tolist() == [True, True, False, False]
    assert sequences.attributes["price"].describe(np.array(skus)) == ["0-9", "50-59", "60-69", "90-99"]

    vocabulary = build_sku_sequences(folder, SkuSequenceOptions(min_item_count=2, min_length=1))  # skus 12 and 13
    later = sku_sequences_over(folder, vocabulary, SkuSequenceOptions(min_length=1))
    assert _skus(later) == {1: [12, 13], 2: [12, 13]} and later.n_items == vocabulary.n_items == 2
    assert later.attributes["category"].labels == vocabulary.attributes["category"].labels


TRAINING_DAY = LAST_DAY.isoformat()
QUICK = {
    "ops": {
        "sasrec_model": {
            "config": {
                "training_day": TRAINING_DAY,
                "min_item_count": 1,
                "min_users": 20,
                "overrides": {
                    "d_model": 32,
                    "n_blocks": 1,
                    "max_len": 16,
                    "dropout": 0.1,
                    "epochs": 20,
                    "patience": 20,
                    "batch_size": 16,
                    "learning_rate": 5e-3,
                },  # fmt: skip
            }
        },
        "sae_dictionary": {
            "config": {
                "holdout_users": 0.5,
                "overrides": {
                    "expansion": 4,
                    "k": 4,
                    "epochs": 30,
                    "batch_size": 64,
                    "learning_rate": 3e-3,
                    "dead_window_tokens": 500,
                },  # fmt: skip
            }
        },
        "sae_feature_annotations": {"config": {"min_fires": 10, "min_value_tokens": 5, "min_item_tokens": 2}},
        "steering_report": {"config": {"n_features": 2, "strength_grid": [1.0, 4.0]}},
    }
}
RECOMMENDER_ASSETS = ["sasrec_model", "sae_dictionary", "sae_feature_annotations", "steering_report"]


@dataclass(frozen=True)
class RecommenderRun:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    metadata: dict[str, dict]
    checks: dict[str, bool]  # check name -> passed


@pytest.fixture(scope="module")
def recommender_run(tiny_source, tmp_path_factory) -> RecommenderRun:
    """The tiny data ingested, its newest day's sequences built, and group:recommender materialized once (small
    configs, one torch thread) for every test of this module."""
    settings = settings_for(tiny_source, tmp_path_factory.mktemp("recommender") / "home", TINY.start, LAST_DAY)
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        days = (settings.first_day, settings.last_day)
        assert materialize(defs, "group:ingest", instance, partition_range=days).success
        assert materialize(defs, "user_sequences", instance, partition=LAST_DAY).success
        result = materialize(defs, "group:recommender", instance, run_config=QUICK)
        assert result.success
        metadata = {
            event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()
        }
        checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
        yield RecommenderRun(settings, defs, instance, metadata, checks)


def test_the_recommender_assets_materialize_with_their_metrics(recommender_run):
    metadata = recommender_run.metadata
    assert sorted(metadata) == sorted(RECOMMENDER_ASSETS)

    model = metadata["sasrec_model"]
    assert model["training_cutoff"] == TRAINING_DAY and model["users"] >= 20 and model["epochs"] >= 1
    assert 0 <= model["test_ndcg@10"] <= model["test_hr@10"] <= 1
    assert 0 <= model["popularity_ndcg@10"] <= model["popularity_hr@10"] <= 1
    assert 0 <= model["item_to_item_ndcg@10"] <= model["item_to_item_hr@10"] <= 1
    assert all(name in model["test_quality"] for name in ("SASRec", "popularity", "item-to-item", "SASRec + item"))
    valid = {row["model"]: row["valid_ndcg@10"] for row in model["quality"]}
    assert model["served_model"] == max(valid, key=valid.get)
    assert model["sasrec_beats_baselines"] == (valid["SASRec"] > max(valid["popularity"], valid["item-to-item"]))
    assert ("does NOT beat" in model["verdict"]) != model["sasrec_beats_baselines"]
    assert model["training_curve"].count("\n") == model["epochs"] + 1 and len(model["history"]) == model["epochs"]
    assert model["training_seconds"] > 0 and model["device"] == TorchDevice().runtime().describe()["device_name"]

    sae = metadata["sae_dictionary"]
    assert sae["layer"] == 1 and sae["n_latents"] == 128 and sae["l0"] == pytest.approx(4.0)
    assert 0 < sae["explained_variance"] <= 1 and "mean(x)" in sae["explained_variance_formula"]
    assert 0 <= sae["dead_fraction"] <= 1 and f"{sae['holdout_tokens']:,}" in sae["dead_fraction_window"]
    assert 0 <= sae["dead_on_training_tokens"] <= sae["silent_fraction_expected"] <= 1
    assert {"ndcg@10_original", "ndcg@10_sae", "ndcg@10_mean_ablated", "ndcg_recovered"} <= set(sae)
    assert sae["ndcg@10_original"] == pytest.approx(model["test_ndcg@10"])

    annotations = metadata["sae_feature_annotations"]
    assert annotations["live_features"] > 0 and annotations["reliable_features"] > 0
    assert "sae |" in annotations["sae_vs_hidden"] and "hidden |" in annotations["sae_vs_hidden"]
    assert np.isfinite(annotations["median_monosemanticity_sae"])

    steering = metadata["steering_report"]
    assert steering["features_steered"] == 2 and "share_after" in steering["steering"]
    assert steering["add_features"] == steering["clamp_features"] == 2
    assert 0 <= steering["add_share_reaching_target_within_10%_cost"] <= 1


def test_the_model_check_says_whether_sasrec_beats_the_baselines(recommender_run):
    model = recommender_run.metadata["sasrec_model"]
    assert recommender_run.checks == {"sasrec_beats_baselines": model["sasrec_beats_baselines"]}


def test_the_annotations_hold_one_row_per_live_feature_labelled_by_item_attributes(recommender_run):
    artifacts = recommender_run.settings.artifact_dir
    stored = load_recommender(artifacts / "sasrec_model")
    dictionary = load_dictionary(artifacts / "sae_dictionary")
    annotations = load_annotations(artifacts / "sae_feature_annotations")
    sequences = stored.sequences(artifacts / "user_sequences" / TRAINING_DAY)
    states = collect_hidden_states(stored.model, sequences.drop_last(2), dictionary.layer, torch.device("cpu"))
    _, held_out = states.split_users(dictionary.config["holdout_users"], dictionary.config["seed"])
    assert len(held_out) == annotations.settings["tokens"]  # the tiny data has fewer tokens than max_tokens: all used
    with torch.no_grad():
        live = np.flatnonzero((dictionary.sae.encode(held_out.states) > 0).any(0).numpy())

    features = annotations.sae_features
    assert sorted(features["feature"]) == live.tolist()
    assert features["label"].str.fullmatch(r"category:\d+|price:\d+-\d+").all()
    assert features["label"].str.startswith("category:").any()
    assert features[["precision", "recall", "auroc", "monosemanticity"]].notna().all().all()
    assert (features["top_items"].str.len() > 0).any() and features["top_sequences"].str.startswith("user ").all()
    assert len(annotations.hidden_dimensions) <= 2 * stored.model.config.d_model
    assert set(annotations.comparison.index) == {"sae", "hidden"}


def _recommend(monkeypatch, capsys, settings: Settings, *args: str) -> str:
    monkeypatch.setenv("UBP_SOURCE_DIR", str(settings.source_dir))
    monkeypatch.setenv("UBP_HOME", str(settings.home))
    monkeypatch.setenv("UBP_FIRST_DAY", settings.first_day.isoformat())
    monkeypatch.setenv("UBP_LAST_DAY", settings.last_day.isoformat())
    main(["recommend", *args])
    return capsys.readouterr().out


def test_ubp_recommend_lists_the_top_k_and_steering_raises_the_category_share(recommender_run, monkeypatch, capsys):
    settings = recommender_run.settings
    artifacts = settings.artifact_dir
    annotations = load_annotations(artifacts / "sae_feature_annotations")
    reliable = annotations.sae_features[annotations.sae_features["fires"] >= annotations.min_fires]
    category = reliable[reliable["label"].str.startswith("category:")]["label"].iloc[0]
    stored = load_recommender(artifacts / "sasrec_model")
    clients = stored.sequences(artifacts / "user_sequences" / TRAINING_DAY).user_ids

    plain = _recommend(monkeypatch, capsys, settings, "--client", str(clients[0]), "--k", "5")
    assert f"client {clients[0]}:" in plain
    assert len(re.findall(r"^\s+\d+\s+sku \d+ \(category \d+, price \d+\)$", plain, flags=re.M)) == 5

    before = after = 0
    for client in clients[:6]:
        printed = _recommend(monkeypatch, capsys, settings, "--client", str(client), "--steer", f"{category}=4")
        assert len(re.findall(r"^\s+\d+\s+sku \d+", printed, flags=re.M)) == 10
        counts = re.search(rf"{category} in the top 10: (\d+) before, (\d+) after steering", printed)
        before, after = before + int(counts[1]), after + int(counts[2])
    assert after > before


def test_ubp_recommend_explains_each_recommendation_by_labelled_features(recommender_run, monkeypatch, capsys):
    settings = recommender_run.settings
    stored = load_recommender(settings.artifact_dir / "sasrec_model")
    client = stored.sequences(settings.artifact_dir / "user_sequences" / TRAINING_DAY).user_ids[0]
    printed = _recommend(monkeypatch, capsys, settings, "--client", str(client), "--k", "3", "--explain")
    assert "model: SASRec" in printed and "why: SAE features" in printed
    reasons = re.findall(
        r"^\s+\d+\s+sku \d+ .*: ((?:category|price):\S+ \(feature \d+, -[\d.]+\).*)$", printed, flags=re.M
    )
    assert reasons, printed


def test_the_recommender_is_skipped_when_the_training_day_has_too_few_users(recommender_run):
    few = {"ops": {"sasrec_model": {"config": {"training_day": TRAINING_DAY, "min_users": 10_000}}}}
    result = materialize(recommender_run.defs, "group:recommender", recommender_run.instance, run_config=few)
    assert result.success
    assert result.get_asset_materialization_events() == []
    skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert sorted(skipped) == sorted(RECOMMENDER_ASSETS[1:])
