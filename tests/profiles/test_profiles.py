"""Universal profiles: assembly rules, the submission validator, and the whole graph through Dagster on tiny data."""

from __future__ import annotations

import json
from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ubp_pipeline.assets.embedders import model_key
from ubp_pipeline.assets.profiles import choose_blocks
from ubp_pipeline.core.profiles.assembly import (
    CLIENT_IDS_FILE,
    EMBEDDINGS_FILE,
    MANIFEST_FILE,
    SELECTION_FILE,
    TABLE_FILE,
    BlockVectors,
    ProfileError,
    assemble_profiles,
    latest_selection,
    validate_profiles,
    write_profiles,
)
from ubp_pipeline.core.profiles.registry import BLOCKS, default_blocks
from ubp_pipeline.definitions import build_definitions
from ubp_pipeline.runner import materialize
from ubp_pipeline.settings import Settings

A = BlockVectors("a", np.array([30, 10]), np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([9.0, 9.0], np.float32))
B = BlockVectors("b", np.array([20]), np.array([[5.0]], np.float32), np.array([0.5], np.float32))


def test_blocks_are_concatenated_per_client_with_fills_for_the_absent():
    profiles = assemble_profiles([A, B], np.array([10, 20, 30, 40]))
    assert profiles.embeddings.dtype == np.float16
    assert profiles.embeddings.astype(np.float32).tolist() == [[3, 4, 0.5], [9, 9, 5], [1, 2, 0.5], [9, 9, 0.5]]
    blocks = profiles.manifest["blocks"]
    assert [(b["name"], b["offset"], b["dims"], b["coverage"]) for b in blocks] == [("a", 0, 2, 0.5), ("b", 2, 1, 0.25)]


@pytest.mark.parametrize(
    ("block", "clients", "message"),
    [
        (A, np.array([10, 10]), "duplicates"),
        (BlockVectors("w", np.array([1]), np.zeros((1, 2049), np.float32), np.zeros(2049, np.float32)), np.array([1]), "2049 dimensions exceed"),
        (BlockVectors("n", np.array([1]), np.array([[np.nan]], np.float32), np.zeros(1, np.float32)), np.array([1]), r"non-finite values in blocks \['n'\]"),
        (BlockVectors("o", np.array([1]), np.array([[1e6]], np.float32), np.zeros(1, np.float32)), np.array([1]), "overflows float16"),
    ],
)
def test_profiles_that_cannot_be_valid_are_refused_before_writing(block, clients, message):
    with pytest.raises(ProfileError, match=message):
        assemble_profiles([block], clients)


def test_written_profiles_pass_the_validator_and_are_readable_as_a_table(tmp_path):
    clients = np.array([10, 20, 30, 40])
    out = write_profiles(assemble_profiles([A, B], clients), tmp_path / "day", {"as_of": "2022-07-01"})
    assert validate_profiles(out, clients) == []
    table = pd.read_parquet(out / TABLE_FILE)
    assert table["client_id"].tolist() == clients.tolist()
    assert np.allclose(np.stack(table["embedding"]), np.load(out / EMBEDDINGS_FILE).astype(np.float32))
    assert json.loads((out / MANIFEST_FILE).read_text())["as_of"] == "2022-07-01"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: np.save(d / EMBEDDINGS_FILE, np.load(d / EMBEDDINGS_FILE).astype(np.float32)), "expected 2-D float16"),
        (lambda d: np.save(d / CLIENT_IDS_FILE, np.array([10, 20, 30, 30])), "1 duplicate ids"),
        (lambda d: np.save(d / CLIENT_IDS_FILE, np.array([10, 20, 30])), "3 client ids but 4 embedding rows"),
        (lambda d: np.save(d / CLIENT_IDS_FILE, np.array([10, 20, 30, 41])), "1 relevant clients are missing"),
        (lambda d: np.save(d / EMBEDDINGS_FILE, np.full((4, 3), np.nan, np.float16)), "12 NaN or infinite values"),
        (lambda d: np.save(d / EMBEDDINGS_FILE, np.zeros((4, 2049), np.float16)), "2049 columns exceed 2048"),
        (lambda d: np.save(d / CLIENT_IDS_FILE, np.array([10, 20, 30, 40], np.int32)), "expected 1-D int64"),
        (lambda d: (d / EMBEDDINGS_FILE).unlink(), "cannot read the profile files"),
    ],
)
def test_the_validator_rejects_broken_files(tmp_path, damage, problem):
    clients = np.array([10, 20, 30, 40])
    out = write_profiles(assemble_profiles([A, B], clients), tmp_path / "day")
    damage(out)
    assert any(problem in p for p in validate_profiles(out, clients)), validate_profiles(out, clients)


def _write_selection(root, decided_on: str, evidence_until: str, blocks: list[str]) -> None:
    folder = root / decided_on
    folder.mkdir(parents=True)
    selection = {"blocks": blocks, "decided_on": decided_on, "evidence_until": evidence_until, "trials": []}
    (folder / SELECTION_FILE).write_text(json.dumps(selection))


def test_a_profile_uses_the_newest_selection_whose_evidence_ended_by_its_day(tmp_path):
    _write_selection(tmp_path, "2022-07-01", "2022-07-29", ["statistics"])
    _write_selection(tmp_path, "2022-07-10", "2022-08-07", ["statistics", "gru_week_all"])
    assert latest_selection(tmp_path, date(2022, 7, 28)) is None  # the backtest of 07-01 saw purchases up to 07-29
    assert latest_selection(tmp_path, date(2022, 7, 29))["blocks"] == ["statistics"]
    assert latest_selection(tmp_path, date(2022, 9, 1))["blocks"] == ["statistics", "gru_week_all"]

    active = default_blocks()
    names, why = choose_blocks([], active, tmp_path, date(2022, 9, 1))
    assert names == ["statistics", "gru_week_all"] and why["source"] == "backtest selection"
    assert why["decided_on"] == "2022-07-10" and why["path"].endswith(SELECTION_FILE)
    pinned = choose_blocks(["als_urls"], active, tmp_path, date(2022, 9, 1))
    assert pinned == (["als_urls"], {"source": "pinned in run config"})
    names, why = choose_blocks([], active, tmp_path, date(2022, 7, 2))
    assert names == default_blocks() and why["source"].startswith("the default blocks")
    assert "text_codes" in BLOCKS and "text_codes" not in names  # opt-in: pinned or selected only
    assert why["opt_in_blocks_not_used"] == [name for name, spec in BLOCKS.items() if not spec.in_default_profile]


def test_opt_in_blocks_are_trained_only_where_the_deployment_names_them(tmp_path):
    """An opt-in block costs training time and earned no default place, so it is in the graph only when
    UBP_OPT_IN_BLOCKS names it; pinned or selected, a block the deployment does not train is refused or ignored."""
    days = {"UBP_FIRST_DAY": "2022-06-23", "UBP_LAST_DAY": "2022-07-13"}
    env = {"UBP_SOURCE_DIR": str(tmp_path / "source"), "UBP_HOME": str(tmp_path / "home"), **days}
    assert Settings.from_env(env).blocks == default_blocks()
    assert Settings.from_env({**env, "UBP_OPT_IN_BLOCKS": "text_codes"}).blocks == [
        name for name in BLOCKS if name in default_blocks() or name == "text_codes"
    ]  # registry order
    assert Settings.from_env({**env, "UBP_OPT_IN_BLOCKS": "all"}).blocks == list(BLOCKS)
    with pytest.raises(ValueError, match=r"\['statistic'\], which are not opt-in blocks"):
        Settings.from_env({**env, "UBP_OPT_IN_BLOCKS": "text_codes, statistic"})

    keys = build_definitions(Settings.from_env(env)).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(model_key("statistics")) in keys and dg.AssetKey(model_key("text_codes")) not in keys
    with pytest.raises(dg.Failure, match=r"blocks \['text_codes'\] are opt-in and not trained here"):
        choose_blocks(["statistics", "text_codes"], default_blocks(), tmp_path, date(2022, 9, 1))
    _write_selection(tmp_path, "2022-07-01", "2022-07-29", ["text_codes"])  # chosen when it was trained, no longer
    names, why = choose_blocks([], default_blocks(), tmp_path, date(2022, 9, 1))
    assert names == default_blocks() and why["source"].startswith("the default blocks")


def test_the_whole_graph_materializes_valid_profiles_through_dagster(tiny_defs, tiny_settings, instance, tiny_source):
    day = tiny_settings.first_day + timedelta(days=14)
    assert materialize(tiny_defs, "group:ingest", instance, partition_range=(tiny_settings.first_day, tiny_settings.last_day)).success
    assert materialize(tiny_defs, ["user_sequences", "stat_features"], instance, partition=day).success
    quick = {"ops": {model_key(name): {"config": {"training_day": day.isoformat()}} for name in tiny_settings.blocks}}
    assert materialize(tiny_defs, "group:models", instance, run_config=quick).success
    result = materialize(tiny_defs, ["group:embeddings", "group:profiles"], instance, partition=day)
    assert result.success
    folder = tiny_settings.artifact_dir / "universal_profiles" / day.isoformat()
    relevant = np.load(tiny_source / "input" / "relevant_clients.npy")
    assert validate_profiles(folder, relevant) == []
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert [b["name"] for b in manifest["blocks"]] == default_blocks()
    assert all(b["training_day"] == day.isoformat() for b in manifest["blocks"])
    check = [e for e in result.get_asset_check_evaluations() if e.check_name == "valid_submission"]
    assert len(check) == 1 and check[0].passed
    subset = {"ops": {"universal_profiles": {"config": {"blocks": ["als_categories", "statistics"]}}}}
    assert materialize(tiny_defs, "universal_profiles", instance, partition=day, run_config=subset).success
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert [b["name"] for b in manifest["blocks"]] == ["als_categories", "statistics"]
